//! The queue from the workers to the logging thread.

use super::TrafficRecord;

/// The sending end of the records queue (see [`record_queue`]).
#[derive(Clone)]
pub struct RecordSender {
    tx: crossbeam_channel::Sender<TrafficRecord>,
    capacity: usize,
}

impl RecordSender {
    /// Queue `record` unless `capacity` records are waiting already (or the logging
    /// thread has gone); returns whether it was queued. Never blocks.
    pub fn try_send(&self, record: TrafficRecord) -> bool {
        self.tx.len() < self.capacity && self.tx.send(record).is_ok()
    }
}

/// The queue from the workers to the logging thread: bounded like a `bounded` channel
/// (several workers may overshoot `capacity` by a record each), but its memory follows
/// what is queued. crossbeam's array channel allocates and touches a slot for every record
/// it could hold (65,536 × 208 bytes: 13 MiB resident from the start, recording on or
/// off); its list channel allocates blocks of 31 as records come and frees them as they
/// are taken.
pub fn record_queue(capacity: usize) -> (RecordSender, crossbeam_channel::Receiver<TrafficRecord>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (RecordSender { tx, capacity }, rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::record::tests::empty_record;

    #[test]
    fn the_record_queue_refuses_records_beyond_its_capacity_and_takes_more_once_drained() {
        let (tx, rx) = record_queue(3);
        for _ in 0..3 {
            assert!(tx.try_send(empty_record()));
        }
        assert!(!tx.try_send(empty_record()));
        rx.try_recv().unwrap();
        assert!(tx.try_send(empty_record()));
        assert_eq!(rx.len(), 3);
    }
}

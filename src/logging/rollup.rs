//! Per-minute rollups of the traffic record: requests, total duration and a latency
//! histogram per (minute, host, target, status class), kept beside the rows in each SQLite
//! file so that `dispa traffic summary` reads minutes, not rows. The logging thread adds
//! each batch to in-memory aggregates and writes them at most once a second (and at a
//! stop), merging with what the table has.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::msg::{RecordText, TrafficRecord};

/// The table, created by migration 3.
pub const SCHEMA: &str = "
    CREATE TABLE requests_per_minute (
        minute        INTEGER NOT NULL,
        host          TEXT    NOT NULL,
        target        TEXT    NOT NULL,
        status_class  INTEGER NOT NULL,
        requests      INTEGER NOT NULL,
        duration_us   INTEGER NOT NULL,
        latency       BLOB    NOT NULL,
        PRIMARY KEY (minute, host, target, status_class)
    ) WITHOUT ROWID;
";

/// Histogram slots: exact below 16 µs, then 8 per power of two up to ~2^31 µs (36 min);
/// a slot's width is at most 1/8 of its value, so a quantile read from it is within 12.5 %.
pub const SLOTS: usize = 16 + 28 * 8;

/// The slot of a duration of `us` microseconds.
pub fn slot(us: u64) -> usize {
    if us < 16 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // us >= 2^e, e >= 4
    let m = ((us >> (e - 3)) & 7) as usize;
    (16 + (e - 4) * 8 + m).min(SLOTS - 1)
}

/// The smallest duration (µs) in slot `i` and the first past it: its range.
pub fn slot_range(i: usize) -> (u64, u64) {
    if i < 16 {
        return (i as u64, i as u64 + 1);
    }
    let (e, m) = ((i - 16) / 8 + 4, ((i - 16) % 8) as u64);
    let low = (8 + m) << (e - 3);
    (low, low + (1 << (e - 3)))
}

/// A latency histogram over [`SLOTS`] slots (stored as u32 counts per minute and group;
/// summed over many minutes in u64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latency(pub Vec<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(vec![0; SLOTS])
    }
}

impl Latency {
    pub fn add(&mut self, us: u64) {
        self.0[slot(us)] += 1;
    }

    pub fn merge(&mut self, other: &Latency) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// Little-endian u32 counts, as stored (one minute of one group never reaches 2^32).
    pub fn to_blob(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|&c| (c.min(u64::from(u32::MAX)) as u32).to_le_bytes())
            .collect()
    }

    pub fn from_blob(blob: &[u8]) -> Latency {
        let mut h = Latency::default();
        for (slot, bytes) in h.0.iter_mut().zip(blob.chunks_exact(4)) {
            *slot = u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        }
        h
    }

    /// The duration (µs, the middle of its slot) below which a fraction `q` of the
    /// requests fall; 0 when there are none.
    pub fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64 - 1.0) * q).round() as u64;
        let mut seen = 0u64;
        for (i, &c) in self.0.iter().enumerate() {
            seen += c;
            if seen > rank {
                let (low, high) = slot_range(i);
                return (low + high - 1) as f64 / 2.0;
            }
        }
        0.0
    }
}

/// One group's aggregate.
#[derive(Debug, Default, Clone)]
pub struct Aggregate {
    pub requests: u64,
    pub duration_us: u64,
    pub latency: Latency,
}

/// What a logging thread has counted and not yet written: by host, then target, then
/// (minute, status class). Looked up with the record's own strings: a string is copied
/// only for a host or target not seen since the last write (this runs per record).
#[derive(Debug, Default)]
pub struct Pending {
    groups: HashMap<String, HashMap<String, Cells>>,
}

/// One host and target's aggregates by (minute, status class): a handful.
type Cells = Vec<((i64, u8), Aggregate)>;

impl Pending {
    pub fn add(&mut self, records: &[TrafficRecord]) {
        for r in records {
            self.add_one(
                (r.start_ms / 60_000) as i64,
                r.field(RecordText::Host),
                r.field(RecordText::Target),
                r.status,
                r.duration_us,
            );
        }
    }

    pub fn add_one(&mut self, minute: i64, host: &str, target: &str, status: u16, us: u64) {
        if !self.groups.contains_key(host) {
            self.groups.insert(host.to_string(), HashMap::new());
        }
        let targets = self.groups.get_mut(host).expect("inserted above");
        if !targets.contains_key(target) {
            targets.insert(target.to_string(), Vec::new());
        }
        let cells = targets.get_mut(target).expect("inserted above");
        let key = (minute, (status / 100) as u8);
        let i = match cells.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                cells.push((key, Aggregate::default()));
                cells.len() - 1
            }
        };
        let g = &mut cells[i].1;
        g.requests += 1;
        g.duration_us += us;
        g.latency.add(us);
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Forget what was counted (once it is in the table).
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    /// Merge everything into the table in a transaction of its own (the caller clears).
    pub fn write_committed(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction()?;
        self.write(&tx)?;
        tx.commit()
    }

    /// Merge everything into the table, in the caller's transaction (the caller clears
    /// it once that transaction has committed).
    pub fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut read = conn.prepare_cached(
            "SELECT requests, duration_us, latency FROM requests_per_minute \
             WHERE minute = ?1 AND host = ?2 AND target = ?3 AND status_class = ?4",
        )?;
        let mut write = conn.prepare_cached(
            "INSERT OR REPLACE INTO requests_per_minute \
             (minute, host, target, status_class, requests, duration_us, latency) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let cells = self.groups.iter().flat_map(|(host, targets)| {
            targets.iter().flat_map(move |(target, cells)| {
                cells.iter().map(move |(key, g)| (host, target, key, g))
            })
        });
        for (host, target, &(minute, class), g) in cells {
            let mut g = g.clone();
            let old = read
                .query_row(params![minute, host, target, class], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .optional()?;
            if let Some((requests, duration, latency)) = old {
                g.requests += requests as u64;
                g.duration_us += duration as u64;
                g.latency.merge(&Latency::from_blob(&latency));
            }
            write.execute(params![
                minute,
                host,
                target,
                class,
                g.requests as i64,
                g.duration_us as i64,
                g.latency.to_blob()
            ])?;
        }
        Ok(())
    }
}

/// Fill the rollups from the rows already stored (migration 3, once).
pub fn backfill(conn: &Connection) -> rusqlite::Result<()> {
    let mut pending = Pending::default();
    {
        let mut rows =
            conn.prepare("SELECT ts_ms, host, target, status, duration_us FROM requests")?;
        let mut rows = rows.query([])?;
        while let Some(r) = rows.next()? {
            let ts: i64 = r.get(0)?;
            let (host, target): (String, String) = (r.get(1)?, r.get(2)?);
            pending.add_one(
                ts.div_euclid(60_000),
                &host,
                &target,
                r.get(3)?,
                r.get::<_, i64>(4)? as u64,
            );
        }
    }
    pending.write(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_durations_in_order_within_an_eighth() {
        let mut last = 0;
        for us in [0u64, 1, 15, 16, 17, 31, 32, 100, 1_000, 65_432, 1 << 30] {
            let s = slot(us);
            assert!(s >= last, "{us}");
            last = s;
            let (low, high) = slot_range(s);
            assert!(low <= us && us < high, "{us} in {low}..{high}");
            assert!((high - low) * 8 <= low.max(8), "{us}: {low}..{high}");
        }
        assert_eq!(slot(u64::MAX), SLOTS - 1);
    }

    #[test]
    fn quantiles_come_from_the_middle_of_their_slot() {
        let mut h = Latency::default();
        for us in 1..=100 {
            h.add(us * 10);
        }
        let p50 = h.quantile(0.5);
        assert!((450.0..=560.0).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((900.0..=1100.0).contains(&p99), "{p99}");
        assert_eq!(Latency::from_blob(&h.to_blob()), h);
    }

    #[test]
    fn pending_groups_merge_with_what_the_table_has() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut p = Pending::default();
        p.add_one(10, "a", "t", 200, 100);
        p.add_one(10, "a", "t", 204, 300);
        p.write(&conn).unwrap();
        p.clear();
        p.add_one(10, "a", "t", 200, 200);
        p.add_one(10, "a", "t", 503, 50);
        p.write(&conn).unwrap();
        let rows: Vec<(i64, i64, i64)> = conn
            .prepare(
                "SELECT status_class, requests, duration_us FROM requests_per_minute ORDER BY 1",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [(2, 3, 600), (5, 1, 50)]);
    }
}

//! What one request came to, filled in as it goes: read by the counters and the traffic
//! record when it ends.

use std::time::Duration;

use super::client::Answered;
use super::tally::NONE;
use crate::msg::ErrorKind;

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Status sent to the client (0: none was sent).
    pub status: u16,
    /// Index of the target in the snapshot, or [`NONE`].
    pub target: u32,
    /// From sending the request upstream to the response head.
    pub upstream: Option<Duration>,
    /// Body bytes received from the client and sent to it.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Whether the upstream connection came from the pool (`None`: no upstream).
    pub reused: Option<bool>,
    pub retries: u8,
    /// Why the request failed, when it did.
    pub error: Option<ErrorKind>,
}

impl Outcome {
    /// Note an answer Dispa made itself (`None`: there was none); returns whether it was
    /// written completely.
    pub fn answered(&mut self, answer: Option<Answered>) -> bool {
        let Some(a) = answer else {
            return false;
        };
        self.status = a.status;
        self.response_bytes = a.body_bytes;
        a.sent
    }
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            status: 0,
            target: NONE,
            upstream: None,
            request_bytes: 0,
            response_bytes: 0,
            reused: None,
            retries: 0,
            error: None,
        }
    }
}

/// What the client's connection does after a request.
pub enum Next {
    KeepAlive,
    Close,
    /// The target switched protocols: relay bytes both ways on this upstream connection
    /// (holding its place under the target's connection limit until it ends).
    Tunnel(crate::io::Stream, super::pool::Permit),
}

impl Next {
    /// Keep-alive when `keep` holds, else close.
    pub fn keep_if(keep: bool) -> Next {
        if keep { Next::KeepAlive } else { Next::Close }
    }
}

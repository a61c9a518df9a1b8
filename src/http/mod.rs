//! Sans-IO HTTP/1.1: parse heads with `httparse` into offsets (no copies, no allocation),
//! decide framing by RFC 9112 §6, decode chunked bodies, and serialize the heads Dispa
//! sends. Nothing here reads a socket or a clock.

pub mod body;
pub mod canned;
pub mod encode;
pub mod host;
pub mod parse;

pub use parse::{Body, RequestError, RequestHead, ResponseError, ResponseHead, Span};

/// Header storage per head (and the most `limits.max_headers` may be). 128 so that a
/// `u128` bitmask can say which fields are not forwarded as they are.
pub const MAX_HEADERS: usize = 128;

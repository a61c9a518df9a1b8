//! Owned-buffer socket I/O on monoio, shared by the workers and the control thread: the
//! read buffer ([`ReadBuf`]), and reading one HTTP/1.1 head with `http`'s parsers (the
//! status API and the health prober; the proxy's own loop adds parking and deadlines).

mod buf;
pub mod tls;

pub use buf::{ReadBuf, is_cancelled, write_vec};
pub use tls::Stream;

use monoio::io::AsyncReadRent;

/// Why no head was read.
#[derive(Debug)]
pub enum HeadError<E> {
    /// The peer closed before a complete head.
    Closed,
    /// No complete head within the size limit.
    TooLarge,
    /// The parser refused it.
    Invalid(E),
    Io(std::io::Error),
}

impl<E: std::fmt::Debug> std::fmt::Display for HeadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Closed => f.write_str("closed before a complete head"),
            HeadError::TooLarge => f.write_str("head too large"),
            HeadError::Invalid(e) => write!(f, "invalid head: {e:?}"),
            HeadError::Io(e) => write!(f, "read: {e}"),
        }
    }
}

/// Read from `stream` into `buf` until `parse` finds a complete head (`Ok(Some)`), with at
/// most `max` bytes buffered. The head's bytes stay in `buf`.
pub async fn read_head<R: AsyncReadRent, H, E>(
    stream: &mut R,
    buf: &mut ReadBuf,
    max: usize,
    parse: impl Fn(&[u8]) -> Result<Option<H>, E>,
) -> Result<H, HeadError<E>> {
    loop {
        if !buf.is_empty() {
            match parse(buf.data()) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) if buf.len() >= max => return Err(HeadError::TooLarge),
                Ok(None) => {}
                Err(e) => return Err(HeadError::Invalid(e)),
            }
        }
        match buf.fill(stream, max).await {
            Ok(0) => return Err(HeadError::Closed),
            Ok(_) => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

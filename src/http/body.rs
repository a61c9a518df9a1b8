//! Chunked transfer coding (RFC 9112 §7.1) as a sans-IO decoder: it validates framing
//! strictly (pure hex sizes, CRLF after data, bounded extensions and trailers) and hands
//! back data ranges; the caller re-frames them, so no client byte decides upstream framing.

/// Largest chunk-extension and trailer section accepted, in bytes.
pub const MAX_EXTENSION_BYTES: usize = 4096;
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    BadLineEnd,
    ExtensionTooLong,
    TrailersTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` counts them.
    Size {
        digits: u8,
    },
    /// After `;`: skipping a chunk extension.
    Extension {
        len: usize,
    },
    /// Expecting LF after the size line's CR.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `input[..n]` was framing, consumed; call again with the rest.
    Framing(usize),
    /// `input[..n]` is body data (consumed).
    Data(usize),
    /// All input consumed, more needed.
    NeedMore,
    /// The last chunk and trailers ended after `input[..n]`.
    Done(usize),
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from the start of `input`.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        if self.state == State::Data {
            if input.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = (input.len() as u64).min(self.size) as usize;
            self.size -= n as u64;
            if self.size == 0 {
                self.state = State::DataCr;
            }
            return Ok(Step::Data(n));
        }
        for (i, &b) in input.iter().enumerate() {
            self.state = match self.state {
                State::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.size >> 60 != 0 {
                            return Err(ChunkError::BadSize);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size << 4 | d;
                        State::Size {
                            digits: digits.saturating_add(1),
                        }
                    }
                    b';' if digits > 0 => State::Extension { len: 0 },
                    b'\r' if digits > 0 => State::SizeLf,
                    _ => return Err(ChunkError::BadSize),
                },
                State::Extension { len } => match b {
                    b'\r' => State::SizeLf,
                    b'\n' | 0 => return Err(ChunkError::BadLineEnd),
                    _ if len >= MAX_EXTENSION_BYTES => return Err(ChunkError::ExtensionTooLong),
                    _ => State::Extension { len: len + 1 },
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        self.state = State::Data;
                        return Ok(Step::Framing(i + 1));
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { digits: 0 },
                State::DataCr | State::DataLf => return Err(ChunkError::BadLineEnd),
                State::TrailerStart => match b {
                    b'\r' => State::TrailerLf { empty: true },
                    _ => self.trailer_byte(b)?,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf { empty: false },
                    _ => self.trailer_byte(b)?,
                },
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    if empty {
                        self.state = State::Done;
                        return Ok(Step::Done(i + 1));
                    }
                    State::TrailerStart
                }
                State::Data | State::Done => unreachable!("handled before the loop"),
            };
        }
        Ok(if input.is_empty() {
            Step::NeedMore
        } else {
            Step::Framing(input.len())
        })
    }

    fn trailer_byte(&mut self, b: u8) -> Result<State, ChunkError> {
        // Trailers are read for framing only and then dropped: never used to delimit.
        if b == b'\n' || b == 0 {
            return Err(ChunkError::BadLineEnd);
        }
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError::TrailersTooLong);
        }
        Ok(State::TrailerLine)
    }
}

/// Append a chunk header for `len` data bytes.
pub fn chunk_header(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode all of `input` (fed in pieces of `step` bytes); returns the data.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match d.decode(&pending[pos..])? {
                    Step::Framing(n) => pos += n,
                    Step::Data(n) => {
                        data.extend_from_slice(&pending[pos..pos + n]);
                        pos += n;
                    }
                    Step::NeedMore => break,
                    Step::Done(n) => {
                        pos += n;
                        assert_eq!(pos, pending.len(), "bytes after the last chunk");
                        return Ok((data, true));
                    }
                }
            }
            pending.drain(..pos);
        }
        Ok((data, d.is_done()))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..body.len() {
            assert_eq!(
                decode_all(body, step).unwrap(),
                (b"hello world".to_vec(), true),
                "step {step}"
            );
        }
    }

    #[test]
    fn rejects_bad_sizes_and_line_ends() {
        for bad in [
            &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5_0\r\n",
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5\r\nhello\r\n0\r\nbad\nline\r\n\r\n",
        ] {
            assert!(
                decode_all(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn largest_size_parses() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"fffffffffffffff\r\n").unwrap(), Step::Framing(17));
    }

    #[test]
    fn bounds_extensions() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_EXTENSION_BYTES + 1));
        assert_eq!(
            decode_all(&long, long.len()),
            Err(ChunkError::ExtensionTooLong)
        );
    }

    #[test]
    fn chunk_header_is_hex() {
        let mut out = Vec::new();
        chunk_header(&mut out, 255);
        chunk_header(&mut out, 0);
        assert_eq!(out, b"ff\r\n0\r\n");
    }
}

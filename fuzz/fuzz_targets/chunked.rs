//! The chunked decoder: any input, fed in arbitrary pieces, never panics, never reports
//! more data than it was given, and decoding re-chunked data gives the same bytes.
#![no_main]

use dispa::http::body::{ChunkedDecoder, Step, chunk_header};
use libfuzzer_sys::fuzz_target;

/// Decode `input` fed in pieces of `piece` bytes; `Some(data)` when the body ended.
fn decode(input: &[u8], piece: usize) -> Option<Vec<u8>> {
    let mut d = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for part in input.chunks(piece.max(1)) {
        pending.extend_from_slice(part);
        let mut pos = 0;
        loop {
            match d.decode(&pending[pos..]).ok()? {
                Step::Framing(n) => pos += n,
                Step::Data(n) => {
                    assert!(n > 0 && pos + n <= pending.len());
                    data.extend_from_slice(&pending[pos..pos + n]);
                    pos += n;
                }
                Step::NeedMore => break,
                Step::Done(n) => {
                    assert!(pos + n <= pending.len());
                    return Some(data);
                }
            }
        }
        pending.drain(..pos);
    }
    None
}

fuzz_target!(|input: &[u8]| {
    let Some((&piece, input)) = input.split_first() else {
        return;
    };
    let whole = decode(input, input.len());
    let pieces = decode(input, usize::from(piece % 16) + 1);
    assert_eq!(whole, pieces, "the result depends on how the input was split");
    if let Some(data) = whole {
        let mut rechunked = Vec::new();
        for c in data.chunks(7) {
            chunk_header(&mut rechunked, c.len());
            rechunked.extend_from_slice(c);
            rechunked.extend_from_slice(b"\r\n");
        }
        rechunked.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode(&rechunked, rechunked.len()), Some(data));
    }
});

//! The read buffer of one side of a connection, for monoio's owned-buffer I/O: bytes are
//! read in at the end and consumed from the front; unconsumed bytes (a pipelined request,
//! the start of a body) stay for the next step.

use std::io;
use std::time::Instant;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
    Canceller,
};

pub struct ReadBuf {
    vec: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    pub fn with_capacity(cap: usize) -> Self {
        ReadBuf {
            vec: Vec::with_capacity(cap),
            start: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.vec[self.start..]
    }

    pub fn len(&self) -> usize {
        self.vec.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.vec.len());
        if self.start == self.vec.len() {
            self.vec.clear();
            self.start = 0;
        }
    }

    /// Read more bytes after the unconsumed ones, growing the buffer up to `max` bytes.
    /// Returns the count read (0 at end of stream). The caller must not read when
    /// `len() >= max`.
    pub async fn fill<R: AsyncReadRent>(&mut self, io: &mut R, max: usize) -> io::Result<usize> {
        self.make_room(max);
        // Taken out for the duration of the read: if this future is dropped (a timeout),
        // the buffer stays with the driver and this side is left empty, never torn.
        let vec = std::mem::take(&mut self.vec);
        let start = std::mem::take(&mut self.start);
        let len = vec.len();
        let (res, slice) = io.read(vec.slice_mut(len..)).await;
        self.vec = slice.into_inner();
        self.start = start;
        res
    }

    /// Like [`ReadBuf::fill`], but at `deadline` the read is cancelled and awaited, so the
    /// buffer (and anything read before the cancel took effect) is kept: for waits after
    /// which the connection is still used. `None`: the deadline passed, nothing was read.
    pub async fn fill_before<R: CancelableAsyncReadRent>(
        &mut self,
        io: &mut R,
        max: usize,
        deadline: Instant,
    ) -> Option<io::Result<usize>> {
        let canceller = Canceller::new();
        let mut read = std::pin::pin!(self.fill_cancelable(io, max, canceller.handle()));
        monoio::select! {
            done = &mut read => return Some(done),
            _ = monoio::time::sleep_until(deadline.into()) => {}
        };
        let _ = canceller.cancel();
        match read.await {
            Err(e) if is_cancelled(&e) => None,
            res => Some(res),
        }
    }

    /// Like [`ReadBuf::fill`], with a read that `cancel` ends early: then it returns what
    /// was read before the cancel took effect, or an error that [`is_cancelled`] tells.
    pub async fn fill_cancelable<R: CancelableAsyncReadRent>(
        &mut self,
        io: &mut R,
        max: usize,
        cancel: CancelHandle,
    ) -> io::Result<usize> {
        self.make_room(max);
        let vec = std::mem::take(&mut self.vec);
        let start = std::mem::take(&mut self.start);
        let len = vec.len();
        let (res, slice) = io.cancelable_read(vec.slice_mut(len..), cancel).await;
        self.vec = slice.into_inner();
        self.start = start;
        res
    }

    fn make_room(&mut self, max: usize) {
        if self.vec.len() == self.vec.capacity() {
            if self.start > 0 {
                self.vec.drain(..self.start);
                self.start = 0;
            }
            if self.vec.len() == self.vec.capacity() {
                let grow = self
                    .vec
                    .capacity()
                    .max(4096)
                    .min(max.saturating_sub(self.vec.len()));
                self.vec.reserve_exact(grow.max(1));
            }
        }
    }

    /// Write the first `n` unconsumed bytes to `io`, then consume them.
    pub async fn write_front<W: AsyncWriteRent>(&mut self, io: &mut W, n: usize) -> io::Result<()> {
        let vec = std::mem::take(&mut self.vec);
        let start = std::mem::take(&mut self.start);
        let (res, slice) = io.write_all(vec.slice(start..start + n)).await;
        self.vec = slice.into_inner();
        self.start = start;
        res?;
        self.consume(n);
        Ok(())
    }

    /// Write `prefix` and then the first `n` unconsumed bytes to `io` in one vectored
    /// write (no copy of the bytes into `prefix`), then consume them; `prefix` is handed
    /// back cleared.
    pub async fn write_front_after<W: AsyncWriteRent>(
        &mut self,
        io: &mut W,
        prefix: &mut Vec<u8>,
        n: usize,
    ) -> io::Result<()> {
        let start = std::mem::take(&mut self.start);
        let pair = TwoSlices::new(
            std::mem::take(prefix),
            std::mem::take(&mut self.vec),
            start,
            n,
        );
        let (res, pair) = io.write_vectored_all(pair).await;
        let (mut head, body) = pair.into_parts();
        head.clear();
        *prefix = head;
        self.vec = body;
        self.start = start;
        res?;
        self.consume(n);
        Ok(())
    }

    /// Make room for reads of up to `cap` bytes at once (a body to relay): a buffer only
    /// grows when a read fills it, and one drained by each write never would.
    pub fn ensure_capacity(&mut self, cap: usize) {
        if self.vec.capacity() < cap {
            self.vec.drain(..self.start);
            self.start = 0;
            self.vec.reserve_exact(cap - self.vec.len());
        }
    }

    /// Free the buffer's memory when nothing is left in it.
    pub fn release(&mut self) {
        if self.is_empty() {
            self.vec = Vec::new();
            self.start = 0;
        }
    }

    /// Release memory held by an idle connection's buffer when it grew past `keep`.
    pub fn shrink_if_idle(&mut self, keep: usize) {
        if self.is_empty() && self.vec.capacity() > keep {
            self.vec = Vec::with_capacity(keep);
            self.start = 0;
        }
    }
}

/// Two owned buffers as one vectored write: all of `head`, then `body[start..start + n]`.
struct TwoSlices {
    head: Vec<u8>,
    body: Vec<u8>,
    /// Point into the two vectors' heap memory, which does not move while they are owned
    /// here (the vectors are never touched until `into_parts`).
    iov: [libc::iovec; 2],
}

impl TwoSlices {
    fn new(head: Vec<u8>, body: Vec<u8>, start: usize, n: usize) -> Self {
        debug_assert!(start + n <= body.len());
        let iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                // SAFETY: `start + n <= body.len()`, so the pointer stays in bounds.
                iov_base: unsafe { body.as_ptr().add(start) } as *mut libc::c_void,
                iov_len: n,
            },
        ];
        TwoSlices { head, body, iov }
    }

    fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.head, self.body)
    }
}

// SAFETY: the iovecs point at initialised bytes of `head` and `body`, whose heap memory
// does not move or change while this value exists.
unsafe impl monoio::buf::IoVecBuf for TwoSlices {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

/// Write all of `out` (an owned scratch vector) to `io`, handing it back cleared.
pub async fn write_vec<W: AsyncWriteRent>(io: &mut W, out: &mut Vec<u8>) -> io::Result<()> {
    let vec = std::mem::take(out);
    let (res, mut vec) = io.write_all(vec).await;
    vec.clear();
    *out = vec;
    res.map(|_| ())
}

/// A read ended by its cancel handle (with nothing read).
pub fn is_cancelled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_resets_when_drained() {
        let mut b = ReadBuf::with_capacity(8);
        b.vec.extend_from_slice(b"abcdef");
        b.consume(2);
        assert_eq!(b.data(), b"cdef");
        b.consume(4);
        assert!(b.is_empty());
        assert_eq!(b.start, 0);
    }
}

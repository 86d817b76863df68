//! Deadlines on a connection's reads and writes.
//!
//! hyper bounds the time to read a request's headers, but not a client that
//! stops reading an answer, or one that holds a connection open and silent.
//! [`Deadlines`] fails a read that waits longer than the idle timeout and a
//! write that makes no progress within the stall deadline, so a connection
//! slot is never held hostage.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `T` with a deadline on every wait.
pub(crate) struct Deadlines<T> {
    io: T,
    idle: Duration,
    stall: Duration,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Deadlines<T> {
    pub(crate) fn new(io: T, idle: Duration, stall: Duration) -> Deadlines<T> {
        Deadlines {
            io,
            idle,
            stall,
            read_timer: None,
            write_timer: None,
        }
    }
}

/// Arms `timer` (if not armed) and reports whether it has fired.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, after: Duration, cx: &mut Context<'_>) -> bool {
    timer
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)))
        .as_mut()
        .poll(cx)
        .is_ready()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlines<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                if expired(&mut this.read_timer, this.idle, cx) {
                    Poll::Ready(Err(timed_out("the client sent nothing in time")))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                this.read_timer = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Deadlines<T> {
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match f(Pin::new(&mut self.io), cx) {
            Poll::Pending => {
                if expired(&mut self.write_timer, self.stall, cx) {
                    Poll::Ready(Err(timed_out("the client stopped reading")))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                self.write_timer = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlines<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, |io, cx| io.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut d = Deadlines::new(a, SHORT, SHORT);
        let mut buf = [0; 8];
        let e = d.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut d = Deadlines::new(a, SHORT, SHORT);
        let e = d.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn progress_resets_the_deadline() {
        let (a, mut b) = tokio::io::duplex(16);
        let mut d = Deadlines::new(a, SHORT, SHORT);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0; 16];
            loop {
                // Slower than one stall deadline overall, never one per write.
                tokio::time::sleep(SHORT / 4).await;
                match b.read(&mut buf).await.unwrap() {
                    0 => break got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        d.write_all(&[1; 160]).await.unwrap();
        d.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap().len(), 160);
    }
}

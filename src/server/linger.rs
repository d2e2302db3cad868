//! A TCP stream that closes with a lingering close, as nginx does: when the gateway answers
//! before reading a whole request (413 for a body over the limit, 408 for one that stopped
//! arriving), the client is still sending. Closing a socket with unread data makes the
//! kernel send a reset, and a reset makes the client's kernel discard the answer it had not
//! read yet: the client sees a broken pipe instead of the 413. So on close the write side is
//! shut (the answer is followed by a FIN) and what the client still sends is read and thrown
//! away until it closes too, for a bounded time.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::conns::ConnState;

/// The longest a closed connection is drained for (nginx's `lingering_time` is 30 s; the
/// answer is already sent, so a few seconds is enough for the client to read it).
const LINGER_TOTAL: Duration = Duration::from_secs(5);
/// A gap in the client's sending that ends the lingering early (nginx's `lingering_timeout`).
const LINGER_GAP: Duration = Duration::from_secs(1);
/// Sockets lingering at once per listener; past it a socket closes at once, so a flood of
/// aborted uploads can't pile up descriptors behind the connection cap.
const MAX_LINGERING: usize = 256;

pub struct LingerStream {
    stream: Option<TcpStream>,
    state: Arc<ConnState>,
    lingering: Arc<AtomicUsize>,
}

impl LingerStream {
    pub fn new(stream: TcpStream, state: Arc<ConnState>, lingering: Arc<AtomicUsize>) -> Self {
        LingerStream {
            stream: Some(stream),
            state,
            lingering,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for LingerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for LingerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream()?.poll_shutdown(cx)
    }
}

impl Drop for LingerStream {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        // Closed for idleness: nothing of a request is unread, close at once.
        if self.state.closed_idle() {
            return;
        }
        // Nothing waiting to be read and the peer gone is the common case: skip the task.
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            Ok(0) => return,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
            _ => {}
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let lingering = self.lingering.clone();
        // Owned by nobody but itself: it ends within LINGER_TOTAL.
        runtime.spawn(async move {
            let _ = stream.shutdown().await;
            let _ = tokio::time::timeout(LINGER_TOTAL, async {
                let mut sink = [0u8; 16 * 1024];
                while let Ok(Ok(n)) = tokio::time::timeout(LINGER_GAP, stream.read(&mut sink)).await
                {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

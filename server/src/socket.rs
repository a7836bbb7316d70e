//! The server's TCP connections, written through one ordered queue per socket.
//!
//! Every accepted socket gets an [`Outgoing`]: the one way bytes reach it, shared by the
//! connection's own task (hyper's HTTP responses, tungstenite's control frames, through
//! [`Conn`]'s `AsyncWrite`) and by the sync engine's thread, which writes each binary WebSocket
//! frame it routes straight into the socket ([`Outgoing::send_binary`]). A write goes to the
//! socket at once when nothing is queued before it; what the socket does not take is queued, in
//! order, and written out by the connection's task when the socket is writable again
//! ([`Outgoing::run`]). Each write is taken whole (queued if need be) under one lock, so frames
//! from the two writers never interleave.
//!
//! Before, each routed frame went through a channel to a writer task of its own connection: one
//! task wake-up (often a thread wake-up) per frame, which the fan-out of one changeset to a hundred
//! receivers paid a hundred times before the first byte left.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// How many writes one socket may have waiting before the next frame is refused: the peer reads
/// too slowly to keep up, and the engine closes its connection instead of buffering without end.
const MAX_QUEUED: usize = 1024;
/// The longest WebSocket frame header: two bytes and a 64-bit length (server frames are unmasked).
const MAX_HEADER: usize = 10;

/// The listener `eddy serve` accepts connections on: TCP with `TCP_NODELAY` (sync frames are
/// small and latency-bound: Nagle's algorithm would hold them for the peer's delayed ACK).
#[derive(Debug)]
pub struct EddyListener(TcpListener);

impl EddyListener {
    /// Accepts connections from `listener`.
    pub fn new(listener: TcpListener) -> Self {
        EddyListener(listener)
    }
}

impl Listener for EddyListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        // axum's own accept logs and retries the errors a listener may return.
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (read, write) = tcp.into_split();
        let out = Arc::new(Outgoing::new(write));
        (Conn { read, out }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// What a request knows about its connection (axum's connect info): the peer's address and the
/// socket's write queue, which the sync endpoint hands to the engine.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// The connection's writes.
    pub out: Arc<Outgoing>,
}

impl Connected<IncomingStream<'_, EddyListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, EddyListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            out: Arc::clone(&stream.io().out),
        }
    }
}

/// One accepted socket, as hyper and tungstenite use it: reads from the socket, writes through
/// its [`Outgoing`].
#[derive(Debug)]
pub struct Conn {
    read: OwnedReadHalf,
    out: Arc<Outgoing>,
}

/// The frame could not be queued: the peer has not read the writes queued before it.
#[derive(Debug)]
pub struct Backlogged;

/// The ordered writes of one socket.
#[derive(Debug)]
pub struct Outgoing {
    tcp: OwnedWriteHalf,
    queue: Mutex<Queue>,
    /// Wakes [`Outgoing::run`]: something was queued, the socket failed, or the engine closed
    /// the connection.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    /// What the socket has not taken yet, in order.
    chunks: VecDeque<Bytes>,
    /// The engine is done with the connection: close it once the queue is written.
    closing: bool,
    /// A write failed: the connection is broken, and nothing more is written.
    failed: bool,
}

/// The bytes of one write: a frame's payload the caller shares, or bytes it lends.
enum Body<'a> {
    Shared(&'a Bytes),
    Borrowed(&'a [u8]),
}

impl Body<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Body::Shared(bytes) => bytes,
            Body::Borrowed(bytes) => bytes,
        }
    }

    /// The bytes from `offset` on, to queue.
    fn tail(&self, offset: usize) -> Bytes {
        match self {
            Body::Shared(bytes) => bytes.slice(offset..),
            Body::Borrowed(bytes) => Bytes::copy_from_slice(bytes.get(offset..).unwrap_or(&[])),
        }
    }
}

impl Outgoing {
    fn new(tcp: OwnedWriteHalf) -> Self {
        Outgoing {
            tcp,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `payload` as one binary WebSocket frame, after everything queued before it. Does not
    /// wait: what the socket does not take now is queued and written by [`Outgoing::run`].
    pub fn send_binary(&self, payload: &Bytes) -> Result<(), Backlogged> {
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        let mut head = [0u8; MAX_HEADER];
        let mut cursor = io::Cursor::new(&mut head[..]);
        // Formatting a length into a buffer sized for the longest header cannot fail.
        let _ = header.format(payload.len() as u64, &mut cursor);
        let used = usize::try_from(cursor.position()).unwrap_or(MAX_HEADER);
        self.write(head.get(..used).unwrap_or(&head), Body::Shared(payload))
            .map(|_| ())
    }

    /// Asks the connection's task to close the connection ([`Outgoing::run`] returns); it
    /// writes what is queued first.
    pub fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }

    /// Writes `head` then `body` after what is queued; false when the socket has failed.
    fn write(&self, head: &[u8], body: Body<'_>) -> Result<bool, Backlogged> {
        let mut queue = self.lock();
        if queue.failed {
            return Ok(false);
        }
        let bytes = body.as_slice();
        let written = if queue.chunks.is_empty() {
            match self
                .tcp
                .try_write_vectored(&[IoSlice::new(head), IoSlice::new(bytes)])
            {
                Ok(n) if n > 0 || head.len() + bytes.len() == 0 => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Ok(_) | Err(_) => {
                    queue.failed = true;
                    drop(queue);
                    self.wake.notify_one();
                    return Ok(false);
                }
            }
        } else if queue.chunks.len() >= MAX_QUEUED {
            return Err(Backlogged);
        } else {
            0
        };
        let was_empty = queue.chunks.is_empty();
        if let Some(rest) = head.get(written..).filter(|rest| !rest.is_empty()) {
            queue.chunks.push_back(Bytes::copy_from_slice(rest));
            queue.chunks.push_back(body.tail(0));
        } else if let Some(offset) = written
            .checked_sub(head.len())
            .filter(|offset| *offset < bytes.len())
        {
            queue.chunks.push_back(body.tail(offset));
        }
        if was_empty && !queue.chunks.is_empty() {
            drop(queue);
            self.wake.notify_one();
        }
        Ok(true)
    }

    /// Writes what is queued until the socket would block: Ok(true) once the queue is empty.
    fn flush(&self, queue: &mut Queue) -> io::Result<bool> {
        if queue.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        while let Some(front) = queue.chunks.front_mut() {
            match self.tcp.try_write(front) {
                Ok(n) if n == front.len() => {
                    queue.chunks.pop_front();
                }
                Ok(n) if n > 0 => front.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Ok(_) => {
                    queue.failed = true;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Err(e) => {
                    queue.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// Writes out what the socket did not take at once, whenever it can take more, until the
    /// engine closes the connection (Ok; what is still queued is left to [`Outgoing::drain`],
    /// which the task bounds in time, since a peer that stopped reading would never take it) or
    /// the socket fails (Err). The connection's task runs this beside its reads.
    pub async fn run(&self) -> io::Result<()> {
        loop {
            let (empty, closing) = {
                let mut queue = self.lock();
                (self.flush(&mut queue)?, queue.closing)
            };
            match (empty, closing) {
                (_, true) => return Ok(()),
                (true, false) => self.wake.notified().await,
                (false, false) => self.tcp.writable().await?,
            }
        }
    }

    /// Writes what is queued: for the end of a connection.
    pub async fn drain(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    /// Writes what is queued, waiting for the socket whenever it is full: ready once the queue
    /// is empty.
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.flush(&mut self.lock())? {
                return Poll::Ready(Ok(()));
            }
            ready!(self.tcp.as_ref().poll_write_ready(cx))?;
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    /// Takes all of `buf` (what the socket does not take now is queued), so a frame or response
    /// is never split around the engine's frames.
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(match self.out.write(&[], Body::Borrowed(buf)) {
            Ok(true) => Ok(buf.len()),
            Ok(false) => Err(io::ErrorKind::BrokenPipe.into()),
            Err(Backlogged) => Err(io::Error::other(
                "the peer is not reading what was sent to it",
            )),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.poll_drain(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Poll::Ready(
            socket2::SockRef::from(self.out.tcp.as_ref()).shutdown(std::net::Shutdown::Write),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A connected pair: the accepted side as the server sees it, and the peer.
    async fn pair() -> (Conn, TcpStream) {
        let mut listener = EddyListener::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let (peer, (conn, _)) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (conn, peer.unwrap())
    }

    /// Reads one unmasked binary frame (as `send_binary` writes them) and returns its payload.
    async fn read_frame(peer: &mut TcpStream) -> Vec<u8> {
        let mut head = [0u8; 2];
        peer.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x82, "a final binary frame");
        let len = match head[1] {
            126 => usize::from(peer.read_u16().await.unwrap()),
            127 => usize::try_from(peer.read_u64().await.unwrap()).unwrap(),
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        peer.read_exact(&mut payload).await.unwrap();
        payload
    }

    #[tokio::test]
    async fn frames_the_peer_cannot_take_yet_wait_in_order_and_a_backlog_is_refused() {
        let (conn, mut peer) = pair().await;
        let out = Arc::clone(&conn.out);
        // Frames of every header length, until the socket buffers are full and the queue is too.
        let frames: Vec<Bytes> = (0..)
            .map(|i: usize| Bytes::from(vec![(i % 251) as u8; [5, 300, 70_000][i % 3]]))
            .take(MAX_QUEUED * 4)
            .collect();
        let mut sent = 0;
        for frame in &frames {
            if out.send_binary(frame).is_err() {
                break;
            }
            sent += 1;
        }
        assert!(
            sent < frames.len(),
            "a peer that never reads is refused at last"
        );
        assert!(out.lock().chunks.len() >= MAX_QUEUED);
        out.close();
        // Closing ends the task's writing at once; what is queued goes out with the drain.
        out.run().await.unwrap();
        let writer = tokio::spawn({
            let out = Arc::clone(&out);
            async move { out.drain().await }
        });
        for frame in frames.iter().take(sent) {
            assert_eq!(read_frame(&mut peer).await, frame.as_ref());
        }
        writer.await.unwrap().unwrap();
        assert!(out.lock().chunks.is_empty());
    }

    #[tokio::test]
    async fn the_connections_own_writes_never_split_the_engines_frames() {
        let (mut conn, mut peer) = pair().await;
        let big = Bytes::from(vec![7u8; 1 << 20]);
        // The engine's frame fills the socket buffers; the task's write queues behind it whole.
        conn.out.send_binary(&big).unwrap();
        conn.write_all(b"\x82\x03abc").await.unwrap();
        conn.out.send_binary(&Bytes::from_static(b"xyz")).unwrap();
        let out = Arc::clone(&conn.out);
        let reader = tokio::spawn(async move {
            let first = read_frame(&mut peer).await;
            let second = read_frame(&mut peer).await;
            let third = read_frame(&mut peer).await;
            (first.len(), second, third)
        });
        out.drain().await.unwrap();
        let (first, second, third) = reader.await.unwrap();
        assert_eq!(first, big.len());
        assert_eq!(second, b"abc");
        assert_eq!(third, b"xyz");
    }

    #[tokio::test]
    async fn a_broken_socket_is_reported_and_written_no_more() {
        let (mut conn, peer) = pair().await;
        drop(peer);
        let big = Bytes::from(vec![1u8; 1 << 16]);
        // Writes into a socket the peer reset fail sooner or later; after that, none is tried.
        let mut failed = false;
        for _ in 0..64 {
            conn.out.send_binary(&big).unwrap();
            if conn.out.lock().failed {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(failed, "the reset was noticed");
        assert!(conn.write_all(b"x").await.is_err());
        assert!(conn.out.run().await.is_err());
    }
}

//! The direct path's wire: frames on a TCP connection between two nodes, and the handshake
//! that authenticates such a connection (one connection per node pair, issue 15's round-trip
//! goal; `node::conn` holds the rules of its use by sessions).
//!
//! Framing (all integers little-endian):
//! 1. A frame is a `u32` length `n` (1 ≤ n ≤ the reader's limit) followed by `n` bytes. After
//!    the handshake each frame holds one envelope (`wire`), so a stream of frames keeps the
//!    envelopes' order.
//! 2. A reader refuses a zero length and a length over its limit at once, before it buffers
//!    the body, so a hostile peer costs at most one frame's limit of memory and then its
//!    connection.
//!
//! The handshake (the dialer `A`, the listener `B`):
//! 1. `B` advertises its address and a *token* (16 random bytes, fresh per incarnation) in its
//!    announcements, over NATS: only a holder of the cluster's NATS credentials learns it.
//! 2. `A` connects and sends one [`Hello`] frame: magic `VMDH`, the cluster's name, `A`'s and
//!    `B`'s incarnations, `B`'s token and a connection number.
//! 3. `B` reads it under a deadline and a small frame limit ([`HELLO_MAX`]); a malformed hello,
//!    another cluster, another incarnation of `B`, a wrong token or silence past the deadline
//!    ends the connection ([`accept_hello`]), and nothing else is affected.
//! 4. `B` answers with a [`Welcome`] frame: magic `VMDW` and `A`'s own token (from `A`'s
//!    announcement), which proves to `A` that it reached `B` and not an impostor.
//!
//! Writing (one [`Writer`] per connection; many actors' threads send on it):
//! 1. Frames are handed over under the caller's lock, in the order the session numbered them.
//! 2. A frame goes straight into the socket on the sender's thread (`try_write`, no task wake)
//!    while nothing is queued before it; what the socket does not take at once (all of it, or
//!    the rest of a partly written frame) is queued for the connection's write loop
//!    ([`WriteLoop`]), and so is every later frame until the queue is empty. This is the
//!    `outbox` protocol (loom-checked), so the socket sees frames in the order handed over.
//! 3. A write error ends the write loop; the connection is then lost (the reader sees it too).
//!
//! Every decoder here treats its input as hostile: it never panics and never allocates more than
//! the bytes it was given (fuzzed with the envelope target, [`crate::fuzz_envelope`]).

use crate::id::{NodeId, check_node_name};
use crate::outbox::Outbox;
use bytes::{Buf, Bytes, BytesMut};
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The largest hello accepted (names are at most 64 bytes, so a real one is under 200).
pub const HELLO_MAX: usize = 256;

/// Bytes of a token.
pub const TOKEN_LEN: usize = 16;

const HELLO_MAGIC: &[u8; 4] = b"VMDH";
const WELCOME_MAGIC: &[u8; 4] = b"VMDW";

/// A secret that a node advertises over NATS and a dialer must present.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token(pub [u8; TOKEN_LEN]);

impl Token {
    /// A fresh token from the operating system's random source.
    pub fn fresh() -> Result<Token, String> {
        let mut t = [0u8; TOKEN_LEN];
        getrandom::getrandom(&mut t).map_err(|e| format!("no random bytes for a token: {e}"))?;
        Ok(Token(t))
    }

    /// Compares in time independent of where the tokens differ, so the answer's timing does not
    /// reveal a prefix.
    pub fn matches(&self, other: &Token) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret: never in logs.
        f.write_str("Token(..)")
    }
}

/// Why a frame or a handshake was refused; the connection is then closed.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The bytes are not what the protocol allows.
    #[error("direct connection: {0}")]
    Malformed(String),
    /// The peer presented a wrong token or named another node or cluster.
    #[error("direct connection refused: {0}")]
    Refused(String),
    /// Nothing (or not enough) arrived before the deadline.
    #[error("direct connection: no handshake within {0:?}")]
    Timeout(Duration),
    /// The connection failed or closed.
    #[error("direct connection: {0}")]
    Io(#[from] std::io::Error),
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, DirectError> {
    Err(DirectError::Malformed(msg.into()))
}

/// Encodes `payload` as one frame (point 1 of the framing).
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.freeze()
}

/// Splits a byte stream into frames (points 1 and 2 of the framing).
pub struct FrameReader {
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    /// A reader that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> FrameReader {
        FrameReader { buf: BytesMut::new(), max }
    }

    /// Changes the limit (a connection reads its handshake under a small one, then frames).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into (for a reader that fills it directly).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next whole frame, `None` if more bytes are needed, an error for a bad length (the
    /// stream cannot be resynchronised: close the connection).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, DirectError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let n = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if n == 0 || n > self.max {
            return malformed(format!("frame length {n} (1 to {} allowed)", self.max));
        }
        if self.buf.len() < 4 + n {
            // Room for the rest of this frame only, never for more than the limit.
            self.buf.reserve(4 + n - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(n).freeze()))
    }

    /// Reads from `io` until a whole frame is buffered; `Ok(None)` on a clean end of stream
    /// between frames.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Bytes>, DirectError> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(Some(f));
            }
            if io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return malformed("the connection closed inside a frame");
            }
        }
    }
}

impl FrameReader {
    /// [`FrameReader::read_frame`] for a socket shared with a [`Writer`].
    pub async fn read_frame_from(&mut self, io: &TcpStream) -> Result<Option<Bytes>, DirectError> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(Some(f));
            }
            io.readable().await?;
            match io.try_read_buf(&mut self.buf) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return malformed("the connection closed inside a frame"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The sending side of a connection (the writing protocol above).
pub struct Writer {
    stream: Arc<TcpStream>,
    out: Arc<Outbox<mpsc::UnboundedSender<Bytes>>>,
}

/// The connection's write loop: writes queued frames in order; ends on a write error (the
/// connection is lost) or when its [`Writer`] is dropped and the queue is empty.
pub struct WriteLoop {
    stream: Arc<TcpStream>,
    /// Weak, so that dropping the writer closes the queue.
    out: std::sync::Weak<Outbox<mpsc::UnboundedSender<Bytes>>>,
    queue: mpsc::UnboundedReceiver<Bytes>,
}

/// Writes what the socket takes without waiting; gives back the rest (point 2 of writing).
fn write_now(stream: &TcpStream, mut f: Bytes) -> Option<Bytes> {
    loop {
        match stream.try_write(&f) {
            Ok(n) if n == f.len() => return None,
            Ok(n) => f.advance(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(f),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Broken: queue it, and the write loop reports the error.
            Err(_) => return Some(f),
        }
    }
}

impl Writer {
    /// A writer on `stream` and the loop the caller runs beside it.
    pub fn new(stream: Arc<TcpStream>) -> (Writer, WriteLoop) {
        let (tx, queue) = mpsc::unbounded_channel();
        let out = Arc::new(Outbox::new(tx));
        let weak = Arc::downgrade(&out);
        (Writer { stream: stream.clone(), out }, WriteLoop { stream, out: weak, queue })
    }

    /// Sends `payload` as one frame. Callers that need order hold one lock across their calls.
    pub fn send(&self, payload: &[u8]) {
        self.out.emit(frame(payload), |f| write_now(&self.stream, f));
    }

    /// Whether frames still wait in the queue.
    pub fn pending(&self) -> bool {
        self.out.pending()
    }
}

impl WriteLoop {
    /// Runs until the writer is gone and everything is written, or a write fails.
    pub async fn run(mut self) -> Result<(), DirectError> {
        while let Some(mut f) = self.queue.recv().await {
            while !f.is_empty() {
                self.stream.writable().await?;
                match self.stream.try_write(&f) {
                    Ok(n) => f.advance(n),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(out) = self.out.upgrade() {
                out.taken();
            }
        }
        Ok(())
    }
}

/// The dialer's first frame (point 2 of the handshake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The cluster's name.
    pub cluster: String,
    /// The dialing node.
    pub from: NodeId,
    /// The node it means to reach.
    pub to: NodeId,
    /// `to`'s advertised token.
    pub token: Token,
    /// A number naming this connection in both nodes' logs and signals.
    pub conn: u64,
}

fn put_name(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DirectError> {
        if n > self.0.len() {
            return malformed("truncated handshake");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, DirectError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn name(&mut self) -> Result<&'a str, DirectError> {
        let n = usize::from(self.take(1)?[0]);
        let s = std::str::from_utf8(self.take(n)?).or_else(|_| malformed("a name is not UTF-8"))?;
        check_node_name(s).map_err(DirectError::Malformed)?;
        Ok(s)
    }

    fn node(&mut self) -> Result<NodeId, DirectError> {
        let name = self.name()?;
        let inc = self.u64()?;
        NodeId::new(name, inc).map_err(DirectError::Malformed)
    }

    fn token(&mut self) -> Result<Token, DirectError> {
        Ok(Token(self.take(TOKEN_LEN)?.try_into().expect("16 bytes")))
    }
}

impl Hello {
    /// The frame's body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_MAX);
        out.extend_from_slice(HELLO_MAGIC);
        put_name(&mut out, &self.cluster);
        for id in [&self.from, &self.to] {
            put_name(&mut out, &id.name);
            out.extend_from_slice(&id.inc.to_le_bytes());
        }
        out.extend_from_slice(&self.token.0);
        out.extend_from_slice(&self.conn.to_le_bytes());
        out
    }

    /// Decodes a hello; never panics.
    pub fn decode(body: &[u8]) -> Result<Hello, DirectError> {
        let mut c = Cursor(body);
        if c.take(4)? != HELLO_MAGIC {
            return malformed("not a hello");
        }
        let cluster = c.name()?.to_string();
        let from = c.node()?;
        let to = c.node()?;
        let token = c.token()?;
        let conn = c.u64()?;
        if !c.0.is_empty() {
            return malformed("trailing bytes after the hello");
        }
        Ok(Hello { cluster, from, to, token, conn })
    }
}

/// The listener's answer (point 4 of the handshake): the dialer's own token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The dialer's advertised token.
    pub token: Token,
}

impl Welcome {
    /// The frame's body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = WELCOME_MAGIC.to_vec();
        out.extend_from_slice(&self.token.0);
        out
    }

    /// Decodes a welcome; never panics.
    pub fn decode(body: &[u8]) -> Result<Welcome, DirectError> {
        let mut c = Cursor(body);
        if c.take(4)? != WELCOME_MAGIC {
            return malformed("not a welcome");
        }
        let token = c.token()?;
        if !c.0.is_empty() {
            return malformed("trailing bytes after the welcome");
        }
        Ok(Welcome { token })
    }
}

/// What a listener checks a hello against.
pub struct Expect<'a> {
    /// This cluster's name.
    pub cluster: &'a str,
    /// This node's incarnation.
    pub me: &'a NodeId,
    /// This node's token.
    pub token: &'a Token,
}

/// Point 3 of the handshake: reads and checks the dialer's hello within `deadline`. Any error
/// means: close this connection (and only it).
pub async fn accept_hello<R: AsyncRead + Unpin>(
    io: &mut R,
    expect: &Expect<'_>,
    deadline: Duration,
) -> Result<Hello, DirectError> {
    let mut reader = FrameReader::new(HELLO_MAX);
    let body = match tokio::time::timeout(deadline, reader.read_frame(io)).await {
        Err(_) => return Err(DirectError::Timeout(deadline)),
        Ok(r) => r?.ok_or_else(|| DirectError::Malformed("closed before the hello".into()))?,
    };
    let hello = Hello::decode(&body)?;
    if hello.cluster != expect.cluster {
        return Err(DirectError::Refused(format!("cluster {:?} is not this one", hello.cluster)));
    }
    if hello.to != *expect.me {
        return Err(DirectError::Refused(format!("{} is not this node ({})", hello.to, expect.me)));
    }
    if !hello.token.matches(expect.token) {
        return Err(DirectError::Refused(format!("{} presented a wrong token", hello.from)));
    }
    Ok(hello)
}

/// The fuzz target's part for this module: arbitrary bytes through the frame reader (in
/// arbitrary chunks) and the handshake decoders return, and a hello that decodes re-encodes to
/// the same bytes.
pub(crate) fn fuzz(bytes: &[u8]) {
    let mut r = FrameReader::new(HELLO_MAX);
    for chunk in bytes.chunks(7) {
        r.push(chunk);
        while let Ok(Some(f)) = r.next_frame() {
            if let Ok(h) = Hello::decode(&f) {
                assert_eq!(h.encode(), f.as_ref(), "a hello changed in a round trip");
            }
            let _ = Welcome::decode(&f);
        }
    }
    if let Ok(h) = Hello::decode(bytes) {
        assert_eq!(h.encode(), bytes, "a hello changed in a round trip");
    }
    if let Ok(w) = Welcome::decode(bytes) {
        assert_eq!(w.encode(), bytes, "a welcome changed in a round trip");
    }
}

#[cfg(test)]
mod tests;

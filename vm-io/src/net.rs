//! TCP and UDP natives.
//!
//! Every operation first tries to complete at once on the actor's thread (a non-blocking read
//! into the connection's buffer, a non-blocking write); only when the socket is not ready does it
//! return a future, which waits for readiness and retries. So a server answering requests that
//! are already buffered never suspends its actor.
//!
//! Reads go through the connection's buffer ([`Conn::rbuf`]): `tcp_read_line` keeps what follows
//! the newline for the next read, and a read cancelled by a timeout or an interrupt leaves what it
//! had read in the buffer, so no input is lost. The buffer holds at most the caller's limit plus
//! one read chunk, so a peer sending a 100 MB line costs `max` bytes, not 100 MB.
//!
//! Writes send everything; a write cancelled part-way may have sent a prefix (as with any
//! stream socket).

use crate::natives::{
    Ctx, NativeResult, Started, arg, data_arg, io_error, size_arg, str_arg, timeout_arg, with_timeout,
};
use crate::perms::{Permissions, split_host_port};
use crate::reopen::{Reopen, bound_address};
use crate::resource::{Conn, Io, Obj, ReadBuf, conn_label};
use crate::resp::Parsed;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use vm_core::{Atom, Exception, Value};

/// Spare room kept in a connection's read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// A read buffer larger than this is replaced by a new one once it is empty (see `pump`).
const BIG_BUFFER: usize = 64 * READ_CHUNK;

/// Returns `Started::Done(Err(e))` from the enclosing native on an error.
macro_rules! try_start {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Started::Done(Err(e)),
        }
    };
}

/// A TCP listener and the connections a `select` accepted but did not hand out (because another
/// case of the select won); `tcp_accept` takes those first, so none is lost.
pub struct Listener {
    /// The socket.
    pub inner: TcpListener,
    backlog: Mutex<VecDeque<(TcpStream, SocketAddr)>>,
}

impl Listener {
    /// A listener with an empty backlog.
    pub(crate) fn new(inner: TcpListener) -> Listener {
        Listener { inner, backlog: Mutex::new(VecDeque::new()) }
    }

    fn take_backlog(&self) -> Option<(TcpStream, SocketAddr)> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

impl Conn {
    /// A connection over `stream`, with an empty buffer and `TCP_NODELAY` set, as Go does:
    /// request/response protocols write small replies, and with Nagle's algorithm the second
    /// reply of a pipelined batch waits for the peer's delayed acknowledgement (tens of ms).
    /// `tcp_nodelay(conn, false)` turns it back off.
    pub fn new(stream: TcpStream) -> Conn {
        // Failing to set an option on a live socket is not worth refusing the connection for.
        let _ = stream.set_nodelay(true);
        Conn { stream, rbuf: Mutex::new(ReadBuf::default()) }
    }
}

/// The connection `obj` holds, or a `:type_error` naming `what`. Inlined: every read and write
/// of a connection asks it first.
#[inline]
fn conn<'o>(what: &str, obj: &'o Obj) -> Result<&'o Conn, Exception> {
    match obj {
        Obj::Tcp(c) => Ok(c),
        _ => Err(Exception::type_error(format!("{what}: expected a tcp connection"))),
    }
}

fn listener<'o>(what: &str, obj: &'o Obj) -> Result<&'o Listener, Exception> {
    match obj {
        Obj::Listener(l) => Ok(l),
        _ => Err(Exception::type_error(format!("{what}: expected a tcp listener"))),
    }
}

fn udp<'o>(what: &str, obj: &'o Obj) -> Result<&'o UdpSocket, Exception> {
    match obj {
        Obj::Udp(u) => Ok(u),
        _ => Err(Exception::type_error(format!("{what}: expected a udp socket"))),
    }
}

/// What a read wants from the buffer: a result, or more bytes.
enum Want {
    Ready(NativeResult),
    More,
}

/// A read's rule for taking its result out of the buffer; `eof` says no more bytes will come.
type Take = fn(&mut ReadBuf, bool, usize) -> Want;

/// Runs a read as far as it goes without waiting: `None` means the socket has nothing now.
fn pump(c: &Conn, what: &str, take: Take, n: usize) -> Option<NativeResult> {
    let mut eof = false;
    loop {
        let mut rb = c.rbuf.lock().unwrap_or_else(|p| p.into_inner());
        if let Want::Ready(r) = take(&mut rb, eof, n) {
            // A buffer that grew for one large message is given back once it is empty, so a
            // connection that received a large value does not keep its memory while idle.
            if rb.buf.is_empty() && rb.buf.capacity() > BIG_BUFFER {
                rb.buf = bytes::BytesMut::new();
            }
            return Some(r);
        }
        let buf = &mut rb.buf;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match c.stream.try_read_buf(buf) {
            Ok(0) => eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(io_error(what, &e))),
        }
    }
}

/// Starts a read: completes at once when it can, otherwise waits for readability and retries.
fn read_op(ctx: &Ctx<'_>, args: &[Value], what: &'static str, take: Take) -> Started {
    let obj = try_start!(ctx.obj_ref(what, &args[0]));
    let n = try_start!(size_arg(what, &args[1]));
    let timeout = try_start!(timeout_arg(what, arg(args, 2)));
    let c = try_start!(conn(what, &obj));
    if let Some(r) = pump(c, what, take, n) {
        return Started::Done(r);
    }
    let obj = obj.arc();
    Started::Pending(with_timeout(what, timeout, async move {
        let Obj::Tcp(c) = &*obj else { return Err(Exception::type_error(what)) };
        loop {
            c.stream.readable().await.map_err(|e| io_error(what, &e))?;
            if let Some(r) = pump(c, what, take, n) {
                return r;
            }
        }
    }))
}

fn take_some(rb: &mut ReadBuf, eof: bool, max: usize) -> Want {
    let buf = &mut rb.buf;
    if !buf.is_empty() {
        let n = buf.len().min(max);
        Want::Ready(Ok(Value::bytes(buf.split_to(n).freeze())))
    } else if eof {
        Want::Ready(Ok(Value::Nil))
    } else {
        Want::More
    }
}

fn take_exact(rb: &mut ReadBuf, eof: bool, n: usize) -> Want {
    let buf = &mut rb.buf;
    if buf.len() >= n {
        Want::Ready(Ok(Value::bytes(buf.split_to(n).freeze())))
    } else if eof {
        Want::Ready(Err(Exception::new(
            Atom::new("closed"),
            format!("tcp_read_exact: input ended after {} of {n} bytes", buf.len()),
        )))
    } else {
        Want::More
    }
}

fn take_line(rb: &mut ReadBuf, eof: bool, max: usize) -> Want {
    let buf = &mut rb.buf;
    let window = buf.len().min(max);
    if let Some(i) = buf[..window].iter().position(|&b| b == b'\n') {
        Want::Ready(Ok(Value::bytes(buf.split_to(i + 1).freeze())))
    } else if buf.len() >= max {
        Want::Ready(Err(Exception::new(
            Atom::new("line_too_long"),
            format!("tcp_read_line: no newline within {max} bytes"),
        )))
    } else if eof {
        if buf.is_empty() {
            Want::Ready(Ok(Value::Nil))
        } else {
            let n = buf.len();
            Want::Ready(Ok(Value::bytes(buf.split_to(n).freeze())))
        }
    } else {
        Want::More
    }
}

pub(crate) fn tcp_read(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    if matches!(args.get(1), Some(Value::Int(0))) {
        return Started::Done(Err(Exception::badarg("tcp_read: max must be at least 1")));
    }
    read_op(ctx, args, "tcp_read", take_some)
}

pub(crate) fn tcp_read_exact(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    read_op(ctx, args, "tcp_read_exact", take_exact)
}

/// One RESP command (see [`crate::resp`]); what it has of an unfinished one waits in the
/// connection's [`crate::resp::Partial`], under the read buffer's lock.
fn take_resp(rb: &mut ReadBuf, eof: bool, max: usize) -> Want {
    match crate::resp::parse(&mut rb.buf, &mut rb.resp, eof, max) {
        Ok(Parsed::Command(list)) => Want::Ready(Ok(list)),
        Ok(Parsed::End) => Want::Ready(Ok(Value::Nil)),
        Ok(Parsed::More) => Want::More,
        Err(e) => Want::Ready(Err(e)),
    }
}

pub(crate) fn tcp_read_resp(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    read_op(ctx, args, "tcp_read_resp", take_resp)
}

/// `tcp_try_read_resp(conn, max)`: the next command if a whole one is already in the read
/// buffer, else `false`; it neither waits nor reads the socket. A server answering a pipelined
/// batch reads the batch's first command with `tcp_read_resp` and the others with this, and
/// writes the replies when it gives `false`.
pub(crate) fn tcp_try_read_resp(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let obj = ctx.obj_ref("tcp_try_read_resp", &args[0])?;
    let max = size_arg("tcp_try_read_resp", &args[1])?;
    let c = conn("tcp_try_read_resp", &obj)?;
    let mut rb = c.rbuf.lock().unwrap_or_else(|p| p.into_inner());
    match take_resp(&mut rb, false, max) {
        Want::Ready(r) => r,
        Want::More => Ok(Value::Bool(false)),
    }
}

pub(crate) fn tcp_read_line(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    if matches!(args.get(1), Some(Value::Int(0))) {
        return Started::Done(Err(Exception::badarg("tcp_read_line: max must be at least 1")));
    }
    read_op(ctx, args, "tcp_read_line", take_line)
}

/// Where a write has got to: the part it is in and the offset in that part.
#[derive(Default)]
struct Cursor {
    part: usize,
    off: usize,
}

/// The parts of `tcp_write`'s data: a string or bytes, or a list of them.
fn write_parts(data: &Value) -> Result<&[Value], Exception> {
    match data {
        Value::List(parts) => {
            for p in parts.iter() {
                data_arg("tcp_write: a list item", p)?;
            }
            Ok(parts)
        }
        other => {
            data_arg("tcp_write", other)?;
            Ok(std::slice::from_ref(other))
        }
    }
}

fn part_bytes(v: &Value) -> &[u8] {
    match v {
        Value::Str(s) => s.as_bytes(),
        Value::Bytes(b) => b,
        _ => &[],
    }
}

/// Parts totalling at most this many bytes are copied into one buffer rather than gathered.
const GATHER: usize = 4096;

/// The total size of `first` and `rest` if it is at most [`GATHER`].
fn small_total(first: &[u8], rest: &[Value]) -> Option<usize> {
    let mut n = first.len();
    for p in rest {
        n += part_bytes(p).len();
        if n > GATHER {
            return None;
        }
    }
    Some(n)
}

/// The most parts handed to one `writev` (Linux's `IOV_MAX` is 1024).
const MAX_IOV: usize = 64;

/// Writes what it can without waiting; `Ok(true)` when everything is written. Several parts go
/// out in one `writev`.
fn write_some(c: &Conn, parts: &[Value], at: &mut Cursor) -> Result<bool, Exception> {
    loop {
        while at.part < parts.len() && at.off >= part_bytes(&parts[at.part]).len() {
            at.part += 1;
            at.off = 0;
        }
        if at.part >= parts.len() {
            return Ok(true);
        }
        let first = &part_bytes(&parts[at.part])[at.off..];
        let rest = &parts[at.part + 1..];
        let r = if rest.is_empty() {
            c.stream.try_write(first)
        } else if let Some(n) = small_total(first, rest) {
            // A batch of small replies: copied together and written as one buffer, which costs
            // the kernel less than gathering many small pieces.
            let mut buf = [0u8; GATHER];
            buf[..first.len()].copy_from_slice(first);
            let mut len = first.len();
            for p in rest {
                let b = part_bytes(p);
                buf[len..len + b.len()].copy_from_slice(b);
                len += b.len();
            }
            debug_assert_eq!(len, n);
            c.stream.try_write(&buf[..n])
        } else {
            let mut iov: smallvec::SmallVec<[io::IoSlice<'_>; MAX_IOV]> = smallvec::SmallVec::new();
            iov.push(io::IoSlice::new(first));
            iov.extend(
                parts[at.part + 1..].iter().take(MAX_IOV - 1).map(|p| io::IoSlice::new(part_bytes(p))),
            );
            c.stream.try_write_vectored(&iov)
        };
        match r {
            Ok(mut n) => {
                // Advance the cursor over the n bytes written.
                while n > 0 && at.part < parts.len() {
                    let left = part_bytes(&parts[at.part]).len() - at.off;
                    if n < left {
                        at.off += n;
                        n = 0;
                    } else {
                        n -= left;
                        at.part += 1;
                        at.off = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("tcp_write", &e)),
        }
    }
}

pub(crate) fn tcp_write(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let obj = try_start!(ctx.obj_ref("tcp_write", &args[0]));
    let timeout = try_start!(timeout_arg("tcp_write", arg(args, 2)));
    let c = try_start!(conn("tcp_write", &obj));
    let mut at = Cursor::default();
    match write_some(c, try_start!(write_parts(&args[1])), &mut at) {
        Ok(true) => return Started::Done(Ok(Value::Nil)),
        Ok(false) => {}
        Err(e) => return Started::Done(Err(e)),
    }
    let obj = obj.arc();
    let data = args[1].clone();
    Started::Pending(with_timeout("tcp_write", timeout, async move {
        let c = conn("tcp_write", &obj)?;
        let parts = write_parts(&data)?;
        loop {
            c.stream.writable().await.map_err(|e| io_error("tcp_write", &e))?;
            if write_some(c, parts, &mut at)? {
                return Ok(Value::Nil);
            }
        }
    }))
}

pub(crate) fn tcp_write_resp(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let obj = try_start!(ctx.obj_ref("tcp_write_resp", &args[0]));
    let timeout = try_start!(timeout_arg("tcp_write_resp", arg(args, 2)));
    let c = try_start!(conn("tcp_write_resp", &obj));
    let data = try_start!(crate::resp::encode_replies(&args[1]));
    let mut off = 0;
    while off < data.len() {
        match c.stream.try_write(&data[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Started::Done(Err(io_error("tcp_write_resp", &e))),
        }
    }
    if off == data.len() {
        return Started::Done(Ok(Value::Nil));
    }
    let obj = obj.arc();
    let rest = [Value::bytes(bytes::Bytes::from(data).slice(off..))];
    Started::Pending(with_timeout("tcp_write_resp", timeout, async move {
        let c = conn("tcp_write_resp", &obj)?;
        let mut at = Cursor::default();
        loop {
            c.stream.writable().await.map_err(|e| io_error("tcp_write_resp", &e))?;
            if write_some(c, &rest, &mut at)? {
                return Ok(Value::Nil);
            }
        }
    }))
}

pub(crate) fn tcp_listen(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let addr = try_start!(str_arg("tcp_listen", &args[0])).into_owned();
    try_start!(ctx.grants.perms.check_net(&addr));
    let (io, pid) = (ctx.io.clone(), ctx.pid);
    Started::Pending(Box::pin(async move {
        let l = listen(&addr).await.map_err(|e| io_error(&format!("tcp_listen {addr}"), &e))?;
        let label = l.local_addr().map_or_else(|_| addr.clone(), |a| a.to_string());
        let reopen = Reopen::Listener(bound_address(&addr, l.local_addr().ok()));
        Ok(io.adopt_as(pid, Obj::Listener(Listener::new(l)), label, reopen))
    }))
}

/// How many connections the kernel queues before the program accepts them. `TcpListener::bind`
/// asks for 128, which a few hundred clients connecting at once overflow (the kernel then falls
/// back to SYN cookies and may reset connections the client believes established); servers
/// commonly ask for more (Go: the system maximum, `somaxconn`, which the kernel caps this to).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds and listens on the first address `addr` resolves to, with address reuse (so a restarted
/// server can bind at once) and a deep accept queue.
pub(crate) async fn listen(addr: &str) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "the address resolves to nothing");
    for a in tokio::net::lookup_host(addr).await? {
        let socket =
            if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

pub(crate) fn tcp_accept(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let obj = try_start!(ctx.obj("tcp_accept", &args[0]));
    let l = try_start!(listener("tcp_accept", &obj));
    let timeout = try_start!(timeout_arg("tcp_accept", arg(args, 1)));
    if let Some((s, peer)) = l.take_backlog() {
        return Started::Done(Ok(ctx.adopt(Obj::Tcp(Conn::new(s)), conn_label(Some(peer)))));
    }
    let (io, pid) = (ctx.io.clone(), ctx.pid);
    Started::Pending(with_timeout("tcp_accept", timeout, async move {
        let l = listener("tcp_accept", &obj)?;
        let (s, peer) = l.inner.accept().await.map_err(|e| io_error("tcp_accept", &e))?;
        Ok(io.adopt(pid, Obj::Tcp(Conn::new(s)), conn_label(Some(peer))))
    }))
}

/// For `select`'s `{:readable, socket}`: ready when a read would not wait for the peer (input
/// is buffered, has arrived, or has ended, or the socket has failed and a read will say so).
/// Arrived bytes are moved into the connection's buffer, so nothing is consumed.
pub fn poll_readable(obj: &Obj, cx: &mut Context<'_>) -> Poll<()> {
    match obj {
        Obj::Tcp(c) => loop {
            {
                let rb = c.rbuf.lock().unwrap_or_else(|p| p.into_inner());
                if !rb.buf.is_empty() {
                    return Poll::Ready(());
                }
            }
            match c.stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            let mut rb = c.rbuf.lock().unwrap_or_else(|p| p.into_inner());
            rb.buf.reserve(READ_CHUNK);
            match c.stream.try_read_buf(&mut rb.buf) {
                // Bytes, or the end of input: either way a read will not wait.
                Ok(_) => return Poll::Ready(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        },
        Obj::Udp(u) => u.poll_recv_ready(cx).map(|_| ()),
        Obj::Listener(l) => poll_accept_ready(l, cx),
        Obj::File(_) => Poll::Ready(()),
    }
}

/// For `select`'s `{:accept, listener}`: ready when a connection is waiting; it is accepted into
/// the listener's backlog, where [`take_accepted`] (or a later `tcp_accept`) finds it.
pub fn poll_accept_ready(l: &Listener, cx: &mut Context<'_>) -> Poll<()> {
    if !l.backlog.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        return Poll::Ready(());
    }
    match l.inner.poll_accept(cx) {
        Poll::Ready(Ok(conn)) => {
            l.backlog.lock().unwrap_or_else(|p| p.into_inner()).push_back(conn);
            Poll::Ready(())
        }
        // A failed accept (say, out of descriptors) is reported by the accept that follows.
        Poll::Ready(Err(_)) => Poll::Ready(()),
        Poll::Pending => Poll::Pending,
    }
}

/// Takes a connection from the listener's backlog as a resource of the caller, or, if the
/// backlog is empty (a failed accept made the case ready), reports the accept error.
pub fn take_accepted(ctx: &Ctx<'_>, obj: &Obj) -> NativeResult {
    let l = listener("select accept", obj)?;
    if let Some((s, peer)) = l.take_backlog() {
        return Ok(ctx.adopt(Obj::Tcp(Conn::new(s)), conn_label(Some(peer))));
    }
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match l.inner.poll_accept(&mut cx) {
        Poll::Ready(Ok((s, peer))) => Ok(ctx.adopt(Obj::Tcp(Conn::new(s)), conn_label(Some(peer)))),
        Poll::Ready(Err(e)) => Err(io_error("tcp_accept", &e)),
        Poll::Pending => Err(Exception::new(Atom::new("io"), "tcp_accept: the connection went away")),
    }
}

pub(crate) fn tcp_connect(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let addr = try_start!(str_arg("tcp_connect", &args[0])).into_owned();
    try_start!(ctx.grants.perms.check_net(&addr));
    let timeout = try_start!(timeout_arg("tcp_connect", arg(args, 1)));
    let (io, pid, grants) = (ctx.io.clone(), ctx.pid, ctx.grants.clone());
    Started::Pending(with_timeout("tcp_connect", timeout, async move {
        let to = reached(&io, &grants.perms, "tcp_connect", &addr).await?;
        let s =
            TcpStream::connect(&to[..]).await.map_err(|e| io_error(&format!("tcp_connect {addr}"), &e))?;
        let peer = s.peer_addr().ok();
        Ok(io.adopt(pid, Obj::Tcp(Conn::new(s)), conn_label(peer)))
    }))
}

/// Rule 1 of `perms` for a target `addr` (`host:port`) already checked as written: where the
/// socket may go. An IP address is used as written; a host name is resolved once, and only the
/// addresses the grant reaches are returned (never empty), for the socket to use as they are.
async fn reached(io: &Io, perms: &Permissions, what: &str, addr: &str) -> Result<Vec<SocketAddr>, Exception> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let resolved: Vec<SocketAddr> =
        tokio::net::lookup_host(addr).await.map_err(|e| io_error(&format!("{what} {addr}"), &e))?.collect();
    let (Some((host, _)), Some(first)) = (split_host_port(addr), resolved.first()) else {
        return Err(Exception::new(
            vm_core::atoms::NOT_FOUND,
            format!("{what} {addr}: the name resolves to nothing"),
        ));
    };
    let port = first.port();
    io.pins.reached(perms, host, port, resolved)
}

pub(crate) fn tcp_shutdown(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let obj = ctx.obj("tcp_shutdown", &args[0])?;
    let c = conn("tcp_shutdown", &obj)?;
    match socket2::SockRef::from(&c.stream).shutdown(std::net::Shutdown::Write) {
        Ok(()) => Ok(Value::Nil),
        // The peer has already gone: there is nothing left to shut down.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(Value::Nil),
        Err(e) => Err(io_error("tcp_shutdown", &e)),
    }
}

pub(crate) fn tcp_buffered(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let obj = ctx.obj_ref("tcp_buffered", &args[0])?;
    let c = conn("tcp_buffered", &obj)?;
    Ok(Value::Int(c.rbuf.lock().unwrap_or_else(|p| p.into_inner()).buf.len() as i64))
}

pub(crate) fn tcp_nodelay(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let obj = ctx.obj("tcp_nodelay", &args[0])?;
    let c = conn("tcp_nodelay", &obj)?;
    c.stream.set_nodelay(args[1].truthy()).map_err(|e| io_error("tcp_nodelay", &e))?;
    Ok(Value::Nil)
}

pub(crate) fn local_addr(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let obj = ctx.obj("local_addr", &args[0])?;
    let a = match &*obj {
        Obj::Listener(l) => l.inner.local_addr(),
        Obj::Tcp(c) => c.stream.local_addr(),
        Obj::Udp(u) => u.local_addr(),
        Obj::File(_) => return Err(Exception::type_error("local_addr: expected a socket, got a file")),
    };
    a.map(|a| Value::str(a.to_string())).map_err(|e| io_error("local_addr", &e))
}

pub(crate) fn peer_addr(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let obj = ctx.obj("peer_addr", &args[0])?;
    let c = conn("peer_addr", &obj)?;
    c.stream.peer_addr().map(|a| Value::str(a.to_string())).map_err(|e| io_error("peer_addr", &e))
}

pub(crate) fn close(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    Ok(Value::Bool(ctx.owned_resource("close", &args[0])?.close()))
}

pub(crate) fn udp_bind(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let addr = try_start!(str_arg("udp_bind", &args[0])).into_owned();
    try_start!(ctx.grants.perms.check_net(&addr));
    let (io, pid) = (ctx.io.clone(), ctx.pid);
    Started::Pending(Box::pin(async move {
        let u = UdpSocket::bind(&addr).await.map_err(|e| io_error(&format!("udp_bind {addr}"), &e))?;
        let label = u.local_addr().map_or_else(|_| addr.clone(), |a| a.to_string());
        let reopen = Reopen::Udp(bound_address(&addr, u.local_addr().ok()));
        Ok(io.adopt_as(pid, Obj::Udp(u), label, reopen))
    }))
}

pub(crate) fn udp_send_to(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let obj = try_start!(ctx.obj("udp_send_to", &args[0]));
    try_start!(udp("udp_send_to", &obj));
    let addr = try_start!(str_arg("udp_send_to", &args[1])).into_owned();
    try_start!(ctx.grants.perms.check_net(&addr));
    let data = args[2].clone();
    try_start!(data_arg("udp_send_to", &data));
    let timeout = try_start!(timeout_arg("udp_send_to", arg(args, 3)));
    let (io, grants) = (ctx.io.clone(), ctx.grants.clone());
    Started::Pending(with_timeout("udp_send_to", timeout, async move {
        let u = udp("udp_send_to", &obj)?;
        let bytes = data_arg("udp_send_to", &data)?;
        let to = reached(&io, &grants.perms, "udp_send_to", &addr).await?;
        // One datagram, one address: the first of the socket's own family, if any.
        let v4 = u.local_addr().map_or(true, |a| a.is_ipv4());
        let to = to.iter().find(|a| a.is_ipv4() == v4).unwrap_or(&to[0]);
        u.send_to(bytes, to).await.map_err(|e| io_error(&format!("udp_send_to {addr}"), &e))?;
        Ok(Value::Nil)
    }))
}

pub(crate) fn udp_recv_from(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let obj = try_start!(ctx.obj("udp_recv_from", &args[0]));
    try_start!(udp("udp_recv_from", &obj));
    let max = try_start!(size_arg("udp_recv_from", &args[1]));
    let timeout = try_start!(timeout_arg("udp_recv_from", arg(args, 2)));
    Started::Pending(with_timeout("udp_recv_from", timeout, async move {
        let u = udp("udp_recv_from", &obj)?;
        let mut buf = vec![0u8; max];
        let (n, from) = u.recv_from(&mut buf).await.map_err(|e| io_error("udp_recv_from", &e))?;
        buf.truncate(n);
        Ok(Value::tuple(vec![Value::bytes(buf), Value::str(from.to_string())]))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natives::lookup;
    use crate::perms::Permissions;
    use crate::resource::{Io, Quiet};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    async fn start(io: &Arc<Io>, name: &str, args: &[Value]) -> NativeResult {
        let started = lookup(Atom::new(name)).unwrap().start(&Ctx::new(io, 1), args);
        match started {
            Started::Done(r) => r,
            Started::Pending(f) => f.await,
        }
    }

    /// `perms` rule 1 through the natives: a granted name goes where it resolves while that
    /// is where it first resolved to; once the VM has seen it resolve elsewhere first (here,
    /// pinned to a documentation address before the real lookup gives 127.0.0.1: a rebinding),
    /// `tcp_connect` and `udp_send_to` refuse, and nothing reaches the listening sockets.
    #[test]
    fn a_name_that_resolves_elsewhere_than_first_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let (tp, up) = (l.local_addr().unwrap().port(), sink.local_addr().unwrap().port());
            let grant = format!("localhost:{tp},localhost:{up},127.0.0.1:0");
            let perms =
                Permissions { net: Permissions::parse_net(Some(&grant)).unwrap(), ..Default::default() };
            let to_tcp = Value::str(format!("localhost:{tp}"));
            let to_udp = Value::str(format!("localhost:{up}"));

            let io = Io::new(perms.clone(), Arc::new(Quiet));
            start(&io, "tcp_connect", std::slice::from_ref(&to_tcp)).await.unwrap();
            let (_, peer) = l.accept().await.unwrap();
            assert!(peer.ip().is_loopback());
            let u = start(&io, "udp_bind", &[Value::str("127.0.0.1:0")]).await.unwrap();
            start(&io, "udp_send_to", &[u, to_udp.clone(), Value::str("hi")]).await.unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(sink.recv_from(&mut buf).await.unwrap().0, 2);

            let rebound = Io::new(perms, Arc::new(Quiet));
            let earlier = |port| vec![SocketAddr::from(([192, 0, 2, 1], port))];
            rebound.pins.reached(&rebound.grants.perms, "localhost", tp, earlier(tp)).unwrap();
            rebound.pins.reached(&rebound.grants.perms, "localhost", up, earlier(up)).unwrap();
            let e = start(&rebound, "tcp_connect", &[to_tcp]).await.unwrap_err();
            assert_eq!(e.kind, crate::perms::permission_atom());
            assert!(
                e.msg
                    .to_string()
                    .contains("it resolved to 127.0.0.1, not to what it first resolved to (192.0.2.1)"),
                "{}",
                e.msg
            );
            let u = start(&rebound, "udp_bind", &[Value::str("127.0.0.1:0")]).await.unwrap();
            let e = start(&rebound, "udp_send_to", &[u, to_udp, Value::str("hi")]).await.unwrap_err();
            assert_eq!(e.kind, crate::perms::permission_atom(), "{}", e.msg);
            let quiet = std::time::Duration::from_millis(200);
            assert!(tokio::time::timeout(quiet, l.accept()).await.is_err(), "a refused connection arrived");
            assert!(
                tokio::time::timeout(quiet, sink.recv_from(&mut buf)).await.is_err(),
                "a refused datagram arrived"
            );
        });
    }

    /// A list of parts larger than the socket's buffers (so the write waits part-way, inside a
    /// part, and resumes) and longer than one writev's limit arrives whole and in order.
    #[test]
    fn a_list_of_parts_is_written_whole_and_in_order() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let io = Io::new(Permissions::all(), Arc::new(Quiet));
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let mut peer = TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            let conn = io.adopt(1, Obj::Tcp(Conn::new(s)), String::new());
            // 300 parts of up to 20 KB (about 3 MB), with an empty part and a string among them.
            let mut parts: Vec<Value> = (0..300u32)
                .map(|i| Value::bytes((0..(i * 97) % 20_000).map(|j| (i + j) as u8).collect::<Vec<u8>>()))
                .collect();
            parts.insert(5, Value::str(""));
            parts.insert(7, Value::str("text"));
            let want: Vec<u8> = parts.iter().flat_map(|p| part_bytes(p).to_vec()).collect();
            let total = want.len();
            let reader = tokio::spawn(async move {
                let mut got = vec![0u8; total];
                peer.read_exact(&mut got).await.unwrap();
                got
            });
            start(&io, "tcp_write", &[conn.clone(), Value::list(parts)]).await.unwrap();
            assert_eq!(reader.await.unwrap(), want);
            // A list with something other than bytes or strings is refused before writing.
            let e = start(&io, "tcp_write", &[conn, Value::list(vec![Value::str("a"), Value::Int(1)])]).await;
            assert_eq!(e.unwrap_err().kind, vm_core::atoms::TYPE_ERROR);
        });
    }
}

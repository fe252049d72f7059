//! Load and hostile-peer tests of the example services (`examples/{echo,http,kv,chat}.vasm`).
//!
//! Each test starts the real `vm` binary (`vm-under-test run --allow-net examples/X.vasm 0`) as
//! a subprocess; port 0 makes the service pick a free port, and the first line it prints
//! (`X listening on 127.0.0.1:PORT`) says which. The clients are real ones where they exist
//! (hyper for HTTP, the `redis` crate for kv) and tokio sockets otherwise, all on 127.0.0.1.
//!
//! Every test is bounded: a fixed number of connections and messages, and a deadline on the
//! whole exchange ([`LIMIT`]). The server process is killed when its [`Server`] guard drops, so
//! a failing test leaves no process behind. Tests run one at a time ([`SERIAL`]): they measure
//! things of the server process (its file descriptors, its memory) and load a machine of two
//! cores, where several at once would only make each slower and the deadlines less telling.
#![allow(
    clippy::print_stderr,
    reason = "a test harness: it reports the timings it measured and a failing server's stderr"
)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vm_tests::{XorShift, first_difference, repo_root};

/// The `vm` binary under test.
const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// The longest any one test's exchange may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(60);

/// How long a server may take to say it is listening.
const STARTUP: Duration = Duration::from_secs(20);

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock poisons it; the next test is still valid.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running example service, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Everything the server has written to standard error so far.
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts `vm run --allow-net examples/NAME.vasm 0` and waits until it listens.
    fn start(name: &str) -> Server {
        Server::start_with(name, &["--allow-net"], &[])
    }

    /// Starts `vm run FLAGS... examples/NAME.vasm 0 ARGS...` and waits until it listens.
    fn start_with(name: &str, flags: &[&str], args: &[&str]) -> Server {
        let program = format!("examples/{name}.vasm");
        let mut child = Command::new(VM)
            .arg("run")
            .args(flags)
            .args([program.as_str(), "0"])
            .args(args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {VM}: {e}"));
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr was piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr_pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]);
                }
            });
        }
        // Standard output is read on a thread of its own (and drained to the end, so the server
        // can never block on a full pipe); the first line comes back through a channel.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), stderr };
        let first = match rx.recv_timeout(STARTUP) {
            Ok(line) => line,
            Err(_) => panic!("{program} did not say it was listening; stderr:\n{}", server.stderr_text()),
        };
        let want = format!("{name} listening on ");
        let addr = first
            .strip_prefix(&want)
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("{program}: first line {first:?}, want \"{want}IP:PORT\""));
        server.addr = addr;
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Panics unless the server is still running and has not panicked.
    fn assert_healthy(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the server exited ({status}); stderr:\n{}", self.stderr_text());
        }
        let err = self.stderr_text();
        assert!(!err.contains("panicked"), "the server panicked:\n{err}");
    }

    /// How many file descriptors the server process has open.
    fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("/proc/PID/fd").count()
    }

    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().expect("a number of kB");
        kb * 1024
    }

    /// The CPU time the server process has used so far (user and system).
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("/proc/PID/stat");
        // The fields after the command name (which is in parentheses and may hold spaces);
        // utime and stime are the 14th and 15th fields of the line, in clock ticks.
        let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
        Duration::from_millis(ticks * 10)
    }

    /// Waits until the server's descriptor count is `want` (connections close asynchronously),
    /// failing after `within`.
    fn await_fd_count(&self, want: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let have = self.fd_count();
            if have == want {
                return;
            }
            if Instant::now() >= deadline {
                panic!("the server has {have} file descriptors open, {want} expected (a leak?)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what the server said may tell why.
            eprintln!("--- the server's standard error:\n{}---", self.stderr_text());
        }
        // Killing a process that has already exited fails harmlessly; wait() reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The soft limit on open files of this process (the server inherits it).
fn open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    line.split_whitespace().nth(3).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
}

/// A tokio runtime for one test's clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `f` on a fresh runtime, failing if it takes longer than [`LIMIT`].
fn run_bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    runtime().block_on(async {
        match tokio::time::timeout(LIMIT, f).await {
            Ok(out) => out,
            Err(_) => panic!("{what} did not finish within {LIMIT:?}"),
        }
    })
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Reads until the peer closes its side; a reset also ends the input (what was read is kept).
async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A line of `len` printable bytes (no newline) followed by "\n".
fn random_line(rng: &mut XorShift, prefix: &str, len: usize) -> Vec<u8> {
    let mut line = prefix.as_bytes().to_vec();
    line.extend((0..len).map(|_| b' ' + (rng.next_u64() % 95) as u8));
    line.push(b'\n');
    line
}

/// Lets `n` load-test connections open together: at most 100 connection attempts at a time
/// (thousands of SYNs at once could overflow a listen queue, and the kernel's answer to that,
/// SYN cookies, can end in a reset that has nothing to do with the server under test), and
/// [`Gate::connect`] returns only once all `n` are open, so they are served at once.
struct Gate {
    connecting: tokio::sync::Semaphore,
    open: tokio::sync::Barrier,
}

impl Gate {
    fn new(n: usize) -> Gate {
        Gate { connecting: tokio::sync::Semaphore::new(100), open: tokio::sync::Barrier::new(n) }
    }

    async fn connect(&self, addr: SocketAddr) -> TcpStream {
        let permit = self.connecting.acquire().await.expect("the semaphore is never closed");
        let stream = connect(addr).await;
        drop(permit);
        self.open.wait().await;
        stream
    }
}

// ---------------------------------------------------------------------------------------------
// echo

/// 1,000 connections open at once, each sending 100 lines of varied length (some of several
/// KiB) and reading them back; every byte is compared.
#[test]
fn echo_thousand_connections_hundred_lines_each() {
    const CONNS: usize = 1000;
    const LINES: usize = 100;
    let _serial = serial();
    let limit = open_file_limit();
    assert!(limit >= 2 * CONNS as u64 + 100, "this test needs `ulimit -n` of at least {}", 2 * CONNS + 100);
    let mut server = Server::start("echo");
    let addr = server.addr;
    let start = Instant::now();
    run_bounded("the echo load", async move {
        let gate = Arc::new(Gate::new(CONNS));
        let mut tasks = Vec::new();
        for id in 0..CONNS {
            let gate = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                // Every connection is open before any sends: 1,000 are served at once.
                let stream = gate.connect(addr).await;
                let mut rng = XorShift::new(id as u64 + 1);
                let mut sent = Vec::new();
                for i in 0..LINES {
                    let len = if i % 25 == 7 {
                        4096 + (rng.next_u64() % 4096) as usize
                    } else {
                        (rng.next_u64() % 120) as usize
                    };
                    sent.extend(random_line(&mut rng, &format!("{id}.{i} "), len));
                }
                let me = stream.local_addr().expect("local address");
                let (mut rd, mut wr) = stream.into_split();
                let writer = async {
                    wr.write_all(&sent).await.expect("write");
                    // End of input: the server echoes the rest, then closes, ending our read.
                    wr.shutdown().await.expect("shutdown");
                };
                let reader = async {
                    let mut got = Vec::with_capacity(sent.len());
                    rd.read_to_end(&mut got).await.map(|_| got)
                };
                let ((), got) = tokio::join!(writer, reader);
                let got = got.unwrap_or_else(|e| panic!("connection {id} ({me}): read: {e}"));
                if got != sent {
                    let at = first_difference(&got, &sent);
                    panic!(
                        "connection {id}: echoed {} bytes for {} sent, first difference at {at}",
                        got.len(),
                        sent.len()
                    );
                }
            }));
        }
        for t in tasks {
            t.await.expect("a client task failed");
        }
    });
    eprintln!("echo: {CONNS} connections x {LINES} lines in {:?}", start.elapsed());
    server.assert_healthy();
}

/// 10,000 connections opened and dropped (a third closed cleanly after a round trip, a third
/// reset after a round trip, a third closed without a word): afterwards the server holds
/// exactly the file descriptors it held before.
#[test]
fn echo_closes_every_connection_it_accepted() {
    const TOTAL: usize = 10_000;
    const WAVE: usize = 100;
    let _serial = serial();
    let mut server = Server::start("echo");
    let addr = server.addr;
    // The baseline is taken after one full connection, so that whatever the runtime sets up
    // lazily on first use is already there.
    run_bounded("a first echo", async move {
        let mut s = connect(addr).await;
        s.write_all(b"warm up\n").await.expect("write");
        s.shutdown().await.expect("shutdown");
        assert_eq!(read_all(&mut s).await, b"warm up\n");
    });
    server.await_fd_count(server.fd_count(), Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(200));
    let baseline = server.fd_count();
    let start = Instant::now();
    run_bounded("10,000 connections", async move {
        for wave in 0..TOTAL / WAVE {
            let mut tasks = Vec::new();
            for i in 0..WAVE {
                let n = wave * WAVE + i;
                tasks.push(tokio::spawn(async move {
                    let mut s = connect(addr).await;
                    match n % 3 {
                        0 | 1 => {
                            let line = format!("connection {n}\n");
                            s.write_all(line.as_bytes()).await.expect("write");
                            let mut reader = tokio::io::BufReader::new(&mut s);
                            let mut got = String::new();
                            reader.read_line(&mut got).await.expect("read");
                            assert_eq!(got, line);
                            if n % 3 == 1 {
                                s.set_zero_linger().expect("SO_LINGER");
                            }
                        }
                        _ => {}
                    }
                    drop(s);
                }));
            }
            for t in tasks {
                t.await.expect("a client task failed");
            }
        }
    });
    server.await_fd_count(baseline, Duration::from_secs(20));
    eprintln!(
        "echo: {TOTAL} connections opened and dropped in {:?}; fds back to {baseline}",
        start.elapsed()
    );
    server.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// hostile peers

/// Silent clients (connected, sending nothing, or half a line) do not delay anyone else.
#[test]
fn echo_silent_clients_do_not_delay_others() {
    let _serial = serial();
    let mut server = Server::start("echo");
    let addr = server.addr;
    run_bounded("echo with silent clients", async move {
        let mut silent = Vec::new();
        for i in 0..50 {
            let mut s = connect(addr).await;
            if i % 2 == 1 {
                s.write_all(b"half a line without its end").await.expect("write");
            }
            silent.push(s);
        }
        let start = Instant::now();
        let mut s = connect(addr).await;
        let (rd, mut wr) = s.split();
        let mut rd = tokio::io::BufReader::new(rd);
        for i in 0..200 {
            let line = format!("round trip {i}\n");
            wr.write_all(line.as_bytes()).await.expect("write");
            let mut got = String::new();
            rd.read_line(&mut got).await.expect("read");
            assert_eq!(got, line);
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "200 round trips took {took:?} beside 50 silent clients");
        // The silent ones are still being served: half a line is completed and comes back.
        let mut s = silent.pop().expect("a silent client");
        s.write_all(b", now ended\n").await.expect("write");
        s.shutdown().await.expect("shutdown");
        assert_eq!(read_all(&mut s).await, b"half a line without its end, now ended\n");
    });
    server.assert_healthy();
}

/// A 100 MB line is cut off at echo's 64 KiB line limit: the connection is closed long before
/// the client could send it all, the server's memory stays small, and others are served.
#[test]
fn echo_refuses_a_100_mb_line_with_bounded_memory() {
    const LINE: usize = 100 << 20;
    let _serial = serial();
    let mut server = Server::start("echo");
    let addr = server.addr;
    let sent = run_bounded("a 100 MB line", async move {
        let mut s = connect(addr).await;
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        while sent < LINE {
            match s.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        // The server closed the connection without echoing anything.
        let echoed = read_all(&mut s).await;
        assert!(echoed.is_empty(), "the server echoed {} bytes of an overlong line", echoed.len());
        sent
    });
    assert!(sent < LINE, "the whole 100 MB line was accepted; the line limit did not close the connection");
    let peak = server.status_bytes("VmHWM");
    assert!(peak < 200 << 20, "the server's peak resident memory was {} MB", peak >> 20);
    run_bounded("echo after the long line", async move {
        let mut s = connect(addr).await;
        s.write_all(b"still here\n").await.expect("write");
        s.shutdown().await.expect("shutdown");
        assert_eq!(read_all(&mut s).await, b"still here\n");
    });
    eprintln!("echo: a 100 MB line cut off after {} MB sent; peak RSS {} MB", sent >> 20, peak >> 20);
    server.assert_healthy();
}

/// Clients that reset their connection halfway through a request (SO_LINGER 0, then close)
/// disturb none of the services: each keeps serving, and holds no descriptor for them.
#[test]
fn resets_mid_request_do_not_disturb_the_services() {
    let _serial = serial();
    /// A service, the start of a request that a client resets in the middle, and a whole
    /// request with (part of) its answer, to show the service still works.
    struct Case {
        name: &'static str,
        partial: &'static [u8],
        probe: &'static [u8],
        want: &'static [u8],
    }
    let cases = [
        Case { name: "echo", partial: b"a line cut sho", probe: b"whole\n", want: b"whole\n" },
        Case {
            name: "http",
            partial: b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ",
            probe: b"GET / HTTP/1.0\r\n\r\n",
            want: b"hello, world",
        },
        Case {
            name: "kv",
            partial: b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\nhal",
            probe: b"PING\r\n",
            want: b"+PONG\r\n",
        },
        Case { name: "chat", partial: b"half a li", probe: b"bye\n", want: b"* welcome 127.0.0.1:" },
    ];
    for Case { name, partial, probe, want } in cases {
        let mut server = Server::start(name);
        let addr = server.addr;
        // A first probe, so that the baseline includes whatever the runtime opens lazily.
        let ask = move || async move {
            let mut s = connect(addr).await;
            s.write_all(probe).await.expect("write");
            s.shutdown().await.expect("shutdown");
            read_all(&mut s).await
        };
        run_bounded("a first probe", async { ask().await });
        std::thread::sleep(Duration::from_millis(200));
        let baseline = server.fd_count();
        run_bounded("resetting clients", async move {
            let mut tasks = Vec::new();
            for _ in 0..100 {
                tasks.push(tokio::spawn(async move {
                    let mut s = connect(addr).await;
                    s.write_all(partial).await.expect("write");
                    // Give the server a moment to start on the request before the reset.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    s.set_zero_linger().expect("SO_LINGER");
                    drop(s);
                }));
            }
            for t in tasks {
                t.await.expect("a client task failed");
            }
            let got = ask().await;
            assert!(
                got.windows(want.len()).any(|w| w == want),
                "{name}: after the resets, the probe got {:?}",
                String::from_utf8_lossy(&got)
            );
        });
        server.await_fd_count(baseline, Duration::from_secs(10));
        server.assert_healthy();
    }
}

// ---------------------------------------------------------------------------------------------
// http

/// 200 keep-alive connections through hyper's client, each carrying 10 requests one after
/// another on the same connection, the last asking to close it.
#[test]
fn http_keep_alive_with_200_connections() {
    const CONNS: usize = 200;
    const REQUESTS: usize = 10;
    let _serial = serial();
    let mut server = Server::start("http");
    let addr = server.addr;
    let start = Instant::now();
    run_bounded("the http load", async move {
        let gate = Arc::new(Gate::new(CONNS));
        let mut tasks = Vec::new();
        for id in 0..CONNS {
            let gate = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                // All 200 connections are open before the first request.
                let stream = gate.connect(addr).await;
                // One hyper connection is one TCP connection: every request below shares it.
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
                let driver = tokio::spawn(conn);
                for i in 0..REQUESTS {
                    sender
                        .ready()
                        .await
                        .unwrap_or_else(|e| panic!("connection {id} closed before request {i}: {e}"));
                    let mut req = hyper::Request::builder()
                        .uri(format!("/conn/{id}/req/{i}"))
                        .header("Host", "127.0.0.1");
                    if i == REQUESTS - 1 {
                        req = req.header("Connection", "close");
                    }
                    let res = sender.send_request(req.body(Empty::<Bytes>::new()).expect("a request")).await;
                    let res = res.unwrap_or_else(|e| panic!("connection {id}, request {i}: {e}"));
                    assert_eq!(res.status(), 200, "connection {id}, request {i}");
                    assert_eq!(res.headers()["content-length"], "12");
                    let body = res.into_body().collect().await.expect("a body").to_bytes();
                    assert_eq!(&body[..], b"hello, world", "connection {id}, request {i}");
                }
                // The server closes after the response to `Connection: close`, which ends the
                // connection's driver cleanly.
                driver.await.expect("the driver task").expect("the connection ended cleanly");
            }));
        }
        for t in tasks {
            t.await.expect("a client task failed");
        }
    });
    eprintln!("http: {CONNS} connections x {REQUESTS} requests in {:?}", start.elapsed());
    server.assert_healthy();
}

/// One parsed HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Splits a byte stream into responses; `no_body[i]` marks the answer to a HEAD request.
fn parse_responses(mut data: &[u8], no_body: &[bool]) -> Vec<Response> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let end = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("an incomplete response head: {:?}", String::from_utf8_lossy(data)));
        let head = std::str::from_utf8(&data[..end]).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a bad status line {status_line:?}"));
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        data = &data[end + 4..];
        let len: usize =
            headers.get("content-length").and_then(|v| v.parse().ok()).expect("a Content-Length");
        let len = if no_body.get(out.len()).copied().unwrap_or(false) { 0 } else { len };
        assert!(data.len() >= len, "a body cut short");
        out.push(Response { status, headers, body: data[..len].to_vec() });
        data = &data[len..];
    }
    out
}

/// Sends `request` bytes on a fresh connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr).await;
    s.write_all(request).await.expect("write");
    read_all(&mut s).await
}

/// Pipelined requests in one write are answered in order (a HEAD without its body, a POST's
/// body skipped), the last, `Connection: close`, closing the connection; HTTP/1.0 closes by
/// default and stays open with `Connection: keep-alive`.
#[test]
fn http_pipelining_and_connection_semantics() {
    let _serial = serial();
    let mut server = Server::start("http");
    let addr = server.addr;
    run_bounded("http exchanges", async move {
        let pipelined = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\nbody\
            GET /d HTTP/1.1\r\nHost: x\r\nconnection: Close\r\n\r\n";
        let got = exchange(addr, pipelined).await;
        let rs = parse_responses(&got, &[false, true, false, false]);
        assert_eq!(rs.len(), 4, "{:?}", String::from_utf8_lossy(&got));
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.status, 200, "response {i}");
            let body: &[u8] = if i == 1 { b"" } else { b"hello, world" };
            assert_eq!(r.body, body, "response {i}");
        }
        assert!(!rs[0].headers.contains_key("connection"));
        assert_eq!(rs[3].headers["connection"], "close");

        let got = exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
        let rs = parse_responses(&got, &[false]);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].headers["connection"], "close");

        // HTTP/1.0 with keep-alive: the connection carries a second request.
        let mut s = connect(addr).await;
        s.write_all(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.expect("write");
        let mut first = vec![0u8; 200];
        let n = s.read(&mut first).await.expect("read");
        let rs = parse_responses(&first[..n], &[false]);
        assert_eq!(rs[0].headers["connection"], "keep-alive");
        s.write_all(b"GET /2 HTTP/1.0\r\n\r\n").await.expect("write");
        let rs = parse_responses(&read_all(&mut s).await, &[false]);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].body, b"hello, world");
    });
    server.assert_healthy();
}

/// Malformed requests get 400 (an oversized head 431, an unsupported transfer coding 501) and
/// the connection is closed after the answer; requests before the bad one are answered first.
#[test]
fn http_refuses_malformed_requests() {
    let _serial = serial();
    let mut server = Server::start("http");
    let addr = server.addr;
    let huge_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("two spaces", b"GET  / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("unknown version", b"GET / HTTP/9.9\r\n\r\n".to_vec(), 400),
        ("header without a colon", b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n".to_vec(), 400),
        ("space in a header name", b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n".to_vec(), 400),
        ("folded header", b"GET / HTTP/1.1\r\nX: a\r\n  b\r\n\r\n".to_vec(), 400),
        ("bad length", b"GET / HTTP/1.1\r\nContent-Length: ten\r\n\r\n".to_vec(), 400),
        ("negative length", b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 501),
        ("huge header", huge_header.into_bytes(), 431),
    ];
    run_bounded("malformed requests", async move {
        for (what, request, status) in cases {
            // A good request first, on the same connection: it is answered normally.
            let mut bytes = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
            bytes.extend_from_slice(&request);
            let got = exchange(addr, &bytes).await;
            let rs = parse_responses(&got, &[false, false]);
            assert_eq!(rs.len(), 2, "{what}: {:?}", String::from_utf8_lossy(&got));
            assert_eq!(rs[0].status, 200, "{what}");
            assert_eq!(rs[1].status, status, "{what}");
            assert_eq!(rs[1].headers["connection"], "close", "{what}");
        }
    });
    server.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// kv

fn redis_client(addr: SocketAddr) -> redis::Client {
    redis::Client::open(format!("redis://{addr}/")).expect("a redis URL")
}

fn redis_connection(client: &redis::Client) -> redis::Connection {
    let con = client.get_connection_with_timeout(Duration::from_secs(10)).expect("a redis connection");
    con.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    con
}

/// 100 clients INCR one key 100 times each, all at once: the replies are exactly 1..=10,000
/// (no increment lost or doubled) and the key ends at 10,000.
#[test]
fn kv_concurrent_incr_is_atomic() {
    const CLIENTS: usize = 100;
    const EACH: usize = 100;
    let _serial = serial();
    let mut server = Server::start("kv");
    let client = redis_client(server.addr);
    let start = Instant::now();
    let barrier = Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut con = redis_connection(&client);
                barrier.wait();
                (0..EACH)
                    .map(|_| redis::cmd("INCR").arg("counter").query::<i64>(&mut con).expect("INCR"))
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let mut seen: Vec<i64> = threads.into_iter().flat_map(|t| t.join().expect("a client thread")).collect();
    seen.sort_unstable();
    let want: Vec<i64> = (1..=(CLIENTS * EACH) as i64).collect();
    assert!(seen == want, "the INCR replies are not exactly 1..={}", CLIENTS * EACH);
    let mut con = redis_connection(&client);
    let total: i64 = redis::cmd("GET").arg("counter").query(&mut con).expect("GET");
    assert_eq!(total, (CLIENTS * EACH) as i64);
    assert!(start.elapsed() < LIMIT, "took {:?}", start.elapsed());
    eprintln!("kv: {CLIENTS} clients x {EACH} INCR in {:?}", start.elapsed());
    server.assert_healthy();
}

/// With a database file, kv keeps its data in SQLite: a SET has reached the disk when its reply
/// arrives, so the data is all there after the server is killed (SIGKILL: nothing is flushed on
/// the way out) and started again, and INCR, DEL and DBSIZE work on it.
#[test]
fn kv_with_a_database_keeps_its_data_across_a_restart() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("vm-kv-db-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let db = dir.join("kv.db").to_string_lossy().into_owned();
    let grant = dir.to_string_lossy().into_owned();
    let (read, write) = (format!("--allow-read={grant}"), format!("--allow-write={grant}"));
    let flags = ["--allow-net", read.as_str(), write.as_str()];
    let binary: Vec<u8> = vec![0, b'\r', b'\n', 0xff, b'x'];
    {
        let mut server = Server::start_with("kv", &flags, &[&db]);
        let mut con = redis_connection(&redis_client(server.addr));
        let ok: String = redis::cmd("SET").arg("greeting").arg("hello").query(&mut con).expect("SET");
        assert_eq!(ok, "OK");
        let _: () = redis::cmd("SET").arg(&binary[..]).arg(&binary[..]).query(&mut con).expect("SET bytes");
        for want in 1..=3 {
            let n: i64 = redis::cmd("INCR").arg("counter").query(&mut con).expect("INCR");
            assert_eq!(n, want);
        }
        let e = redis::cmd("INCR").arg("greeting").query::<i64>(&mut con).unwrap_err();
        assert!(e.to_string().contains("not an integer"), "{e}");
        let _: () = redis::cmd("SET").arg("gone").arg("soon").query(&mut con).expect("SET");
        let n: i64 = redis::cmd("DEL").arg("gone").arg("never-there").query(&mut con).expect("DEL");
        assert_eq!(n, 1);
        server.assert_healthy();
    }
    let mut server = Server::start_with("kv", &flags, &[&db]);
    let mut con = redis_connection(&redis_client(server.addr));
    let greeting: String = redis::cmd("GET").arg("greeting").query(&mut con).expect("GET");
    assert_eq!(greeting, "hello");
    let value: Vec<u8> = redis::cmd("GET").arg(&binary[..]).query(&mut con).expect("GET bytes");
    assert_eq!(value, binary);
    let gone: Option<String> = redis::cmd("GET").arg("gone").query(&mut con).expect("GET");
    assert_eq!(gone, None);
    let n: i64 = redis::cmd("INCR").arg("counter").query(&mut con).expect("INCR");
    assert_eq!(n, 4);
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(size, 3);
    server.assert_healthy();
    drop(server);
    std::fs::remove_dir_all(&dir).expect("the scratch directory is removed");
}

/// SET/GET of random binary keys and values (empty, with "\r\n" and zero bytes, up to 256 KiB)
/// from 10 clients at once; every value reads back exactly.
#[test]
fn kv_set_get_random_values() {
    const CLIENTS: u64 = 10;
    const KEYS: usize = 200;
    let _serial = serial();
    let mut server = Server::start("kv");
    let client = redis_client(server.addr);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut con = redis_connection(&client);
                let mut rng = XorShift::new(c + 100);
                let mut written: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
                for i in 0..KEYS {
                    let mut key = format!("client{c}:").into_bytes();
                    let key_len = (rng.next_u64() % 20) as usize;
                    key.extend(rng.bytes(key_len));
                    let len = match i % 50 {
                        0 => 0,
                        1 => 256 << 10,
                        _ => (rng.next_u64() % 300) as usize,
                    };
                    let mut value = rng.bytes(len);
                    if len > 4 {
                        value[1..3].copy_from_slice(b"\r\n");
                        value[3] = 0;
                    }
                    let () = redis::cmd("SET").arg(&key).arg(&value).query(&mut con).expect("SET");
                    written.insert(key, value);
                }
                for (key, value) in &written {
                    let got: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
                    assert_eq!(got.as_ref(), Some(value), "client {c}: key {key:?}");
                }
                written.len()
            })
        })
        .collect();
    let keys: usize = threads.into_iter().map(|t| t.join().expect("a client thread")).sum();
    let mut con = redis_connection(&client);
    let size: usize = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(size, keys);
    server.assert_healthy();
}

/// The kv example bounds what a client makes it hold, as Redis does: an argument declared
/// longer than a command may be (`proto-max-bulk-len`) is refused at its length line, and a
/// command whose arguments add up past the limit (`client-query-buffer-limit`, 64 MiB here) is
/// refused when it gets there; each with an error reply, then the connection is closed. The
/// server serves the next client as before.
#[test]
fn kv_bounds_what_a_client_sends() {
    let _serial = serial();
    let mut server = Server::start("kv");
    let addr = server.addr;
    run_bounded("oversized commands", async move {
        let got = exchange(addr, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000000\r\n").await;
        assert_eq!(
            got,
            b"-ERR Protocol error: invalid bulk length\r\n",
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        let half = 32 << 20;
        let mut big = format!("*3\r\n$3\r\nSET\r\n${half}\r\n").into_bytes();
        big.resize(big.len() + half, b'v');
        big.extend_from_slice(format!("\r\n${half}\r\n").as_bytes());
        let got = exchange(addr, &big).await;
        assert!(
            got.starts_with(b"-ERR Protocol error: command larger than 67108864 bytes"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        let got = exchange(addr, b"PING\r\nQUIT\r\n").await;
        assert_eq!(got, b"+PONG\r\n+OK\r\n");
    });
    server.assert_healthy();
}

/// A pipeline of 3,000 commands in one batch is answered in order; then the other commands,
/// the Redis tools' start-up queries, errors, and inline commands.
#[test]
fn kv_pipeline_and_commands() {
    const N: usize = 1000;
    let _serial = serial();
    let mut server = Server::start("kv");
    let client = redis_client(server.addr);
    let mut con = redis_connection(&client);

    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("SET").arg(format!("p{i}")).arg(format!("value {i}")).ignore();
    }
    for i in 0..N {
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    for _ in 0..N {
        pipe.cmd("INCR").arg("pipelined");
    }
    let (values, counts): (Vec<String>, Vec<i64>) = {
        let all: Vec<redis::Value> = pipe.query(&mut con).expect("the pipeline");
        assert_eq!(all.len(), 2 * N);
        let values = all[..N].iter().map(|v| redis::from_redis_value_ref(v).expect("a string")).collect();
        let counts = all[N..].iter().map(|v| redis::from_redis_value_ref(v).expect("an int")).collect();
        (values, counts)
    };
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v, &format!("value {i}"));
    }
    assert_eq!(counts, (1..=N as i64).collect::<Vec<_>>());

    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
    let echo: Vec<u8> = redis::cmd("ECHO").arg(b"a\r\nb\0".as_slice()).query(&mut con).expect("ECHO");
    assert_eq!(echo, b"a\r\nb\0");
    let missing: Option<String> = redis::cmd("GET").arg("no such key").query(&mut con).expect("GET");
    assert_eq!(missing, None);
    let deleted: i64 = redis::cmd("DEL").arg("p0").arg("p1").arg("no such key").query(&mut con).expect("DEL");
    assert_eq!(deleted, 2);
    let e = redis::cmd("INCR").arg("p2").query::<i64>(&mut con).expect_err("INCR of a non-number");
    assert!(e.to_string().contains("not an integer"), "{e}");
    let e = redis::cmd("NOSUCHCOMMAND").query::<String>(&mut con).expect_err("an unknown command");
    assert!(e.to_string().contains("unknown command"), "{e}");
    let e = redis::cmd("GET").query::<String>(&mut con).expect_err("GET without a key");
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    // What redis-benchmark and redis-cli ask when they start.
    let save: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("save").query(&mut con).expect("CONFIG GET save");
    assert_eq!(save, ["save", ""]);
    let aof: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("appendonly").query(&mut con).expect("CONFIG GET");
    assert_eq!(aof, ["appendonly", "no"]);
    let docs: Vec<String> = redis::cmd("COMMAND").arg("DOCS").query(&mut con).expect("COMMAND DOCS");
    assert!(docs.is_empty());
    // The connection still works after the errors.
    let () = redis::cmd("SET").arg("after").arg("errors").query(&mut con).expect("SET");
    let v: String = redis::cmd("GET").arg("after").query(&mut con).expect("GET");
    assert_eq!(v, "errors");

    let addr = server.addr;
    run_bounded("raw RESP", async move {
        // Inline commands, as typed into a terminal, then QUIT.
        let got = exchange(addr, b"PING\r\nSET  inline   yes\r\nGET inline\r\nQUIT\r\n").await;
        assert_eq!(got, b"+PONG\r\n+OK\r\n$3\r\nyes\r\n+OK\r\n");
        // A broken command: an error reply, then the connection is closed.
        let got = exchange(addr, b"*1\r\n+PING\r\n").await;
        assert!(got.starts_with(b"-ERR Protocol error"), "{:?}", String::from_utf8_lossy(&got));
        let got = exchange(addr, b"*1\r\n$-5\r\n").await;
        assert!(got.starts_with(b"-ERR Protocol error"), "{:?}", String::from_utf8_lossy(&got));
        // Pipelined: the replies to the commands before a broken one come first, and an empty
        // command (no reply) inside or at the end of a batch holds nothing back.
        let got = exchange(addr, b"*1\r\n$4\r\nPING\r\n*0\r\n*1\r\n$4\r\nPING\r\n*1\r\n+X\r\n").await;
        assert!(
            got.starts_with(b"+PONG\r\n+PONG\r\n-ERR Protocol error"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        let got = exchange(addr, b"*1\r\n$4\r\nPING\r\n*0\r\nQUIT\r\n").await;
        assert_eq!(got, b"+PONG\r\n+OK\r\n");
    });
    server.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// chat

/// 100 clients each say 5 lines: every client hears each line of every other client exactly
/// once, marked with the sender's address, and none of its own.
#[test]
fn chat_every_line_reaches_every_other_client_once() {
    const CLIENTS: usize = 100;
    const LINES: usize = 5;
    let _serial = serial();
    let mut server = Server::start("chat");
    let addr = server.addr;
    let start = Instant::now();
    run_bounded("the chat room", async move {
        // Everyone joins (the welcome line says the room has us) before anyone speaks, and
        // nobody leaves before everyone has heard everything.
        let joined = Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let done = Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let mut tasks = Vec::new();
        for id in 0..CLIENTS {
            let (joined, done) = (Arc::clone(&joined), Arc::clone(&done));
            tasks.push(tokio::spawn(async move {
                let stream = connect(addr).await;
                let me = stream.local_addr().expect("local address");
                let (rd, mut wr) = stream.into_split();
                let mut rd = tokio::io::BufReader::new(rd);
                let mut line = String::new();
                rd.read_line(&mut line).await.expect("read");
                assert!(line.starts_with(&format!("* welcome {me} (")), "client {id}: first line {line:?}");
                joined.wait().await;
                let mut said = String::new();
                for k in 0..LINES {
                    said.push_str(&format!("client {id} line {k}\n"));
                }
                // In two writes split mid-line, so the room must put lines back together.
                let cut = 1 + id % (said.len() - 1);
                wr.write_all(&said.as_bytes()[..cut]).await.expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
                wr.write_all(&said.as_bytes()[cut..]).await.expect("write");
                // Every other client's lines, by (sender, line number); notices ("* ...") aside.
                let mut heard: HashSet<(usize, usize)> = HashSet::new();
                while heard.len() < (CLIENTS - 1) * LINES {
                    line.clear();
                    let n = rd.read_line(&mut line).await.expect("read");
                    assert!(n > 0, "client {id}: the room closed the connection");
                    if line.starts_with("* ") {
                        continue;
                    }
                    let (from, text) = line
                        .strip_prefix('[')
                        .and_then(|l| l.split_once("] "))
                        .unwrap_or_else(|| panic!("client {id}: a line without a sender: {line:?}"));
                    let fields: Vec<&str> = text.split_whitespace().collect();
                    let (sender, k) = match fields.as_slice() {
                        ["client", s, "line", k] => {
                            (s.parse().expect("a number"), k.parse().expect("a number"))
                        }
                        _ => panic!("client {id}: an unexpected line {line:?}"),
                    };
                    assert_ne!(sender, id, "client {id} heard itself");
                    assert!(from != me.to_string(), "client {id}: a line marked with its own address");
                    assert!(heard.insert((sender, k)), "client {id} heard {line:?} twice");
                }
                done.wait().await;
                // Nothing but notices may follow (a duplicate would show up here).
                let extra = tokio::time::timeout(Duration::from_millis(100), async {
                    loop {
                        line.clear();
                        match rd.read_line(&mut line).await {
                            Ok(0) | Err(_) => return None,
                            Ok(_) if line.starts_with("* ") => continue,
                            Ok(_) => return Some(line.clone()),
                        }
                    }
                })
                .await;
                if let Ok(Some(extra)) = extra {
                    panic!("client {id} heard one line too many: {extra:?}");
                }
            }));
        }
        for t in tasks {
            t.await.expect("a client task failed");
        }
    });
    eprintln!("chat: {CLIENTS} clients x {LINES} lines in {:?}", start.elapsed());
    server.assert_healthy();
}

/// A quiet room costs nothing: 100 connected clients, half of them in the middle of a line,
/// and the server uses (almost) no CPU while nobody completes a line. Members wait on their
/// mailbox and their socket at once; none of them polls.
#[test]
fn chat_idle_room_uses_no_cpu() {
    const CLIENTS: usize = 100;
    let _serial = serial();
    let mut server = Server::start("chat");
    let addr = server.addr;
    let rt = runtime();
    let clients = rt.block_on(async move {
        let mut clients = Vec::new();
        for id in 0..CLIENTS {
            let mut s = tokio::io::BufReader::new(connect(addr).await);
            let mut line = String::new();
            s.read_line(&mut line).await.expect("read");
            assert!(line.starts_with("* welcome "), "client {id}: first line {line:?}");
            if id % 2 == 0 {
                s.get_mut().write_all(b"half a line").await.expect("write");
            }
            clients.push(s);
        }
        clients
    });
    // Let the join notices settle, then measure a quiet second.
    std::thread::sleep(Duration::from_millis(300));
    let before = server.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_time() - before;
    assert!(
        used <= Duration::from_millis(50),
        "an idle room of {CLIENTS} used {used:?} of CPU in one second"
    );
    eprintln!("chat: {CLIENTS} idle clients used {used:?} of CPU in one second");
    drop(clients);
    drop(rt);
    server.assert_healthy();
}

//! Real network components for cluster tests, shared by vm-dist's integration tests (through
//! `common`) and the `vm` binary's cluster tests (`tests/tests/cluster.rs` includes this file with
//! `#[path]`): nats-server child processes on free loopback ports, and a TCP proxy that can
//! hold traffic back (a partition). It uses nothing but the standard library, so that both
//! crates can compile it as their own module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released: another process may take it in between,
/// which the server start then reports).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The installed nats-server.
pub(crate) fn nats_server_binary() -> &'static str {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("nats-server is not installed (apt-get install -y nats-server; .ci/run does this)")
}

/// A nats-server child process, killed with SIGKILL when dropped.
pub(crate) struct NatsServer {
    pub port: u16,
    pub cluster_port: u16,
    child: Option<Child>,
    dir: PathBuf,
    config: String,
}

impl NatsServer {
    /// A server with `extra` configuration (NATS config syntax; `$DIR` stands for the server's
    /// own scratch directory) appended; it pings every second, so that dead routes and clients
    /// are noticed within ~3 s.
    pub(crate) fn start(extra: &str) -> NatsServer {
        Self::start_on(free_port(), free_port(), extra)
    }

    /// As [`NatsServer::start`], listening for clients on `port`; `cluster_port` is only kept,
    /// for a caller whose `extra` routes on it.
    pub(crate) fn start_on(port: u16, cluster_port: u16, extra: &str) -> NatsServer {
        let dir = std::env::temp_dir().join(format!("vm-nats-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "listen: 127.0.0.1:{port}\nping_interval: \"1s\"\nping_max: 2\nserver_name: s{port}\n{}\n",
            extra.replace("$DIR", &dir.to_string_lossy())
        );
        let mut s = NatsServer { port, cluster_port, child: None, dir, config };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let conf = self.dir.join("nats.conf");
        std::fs::write(&conf, &self.config).unwrap();
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's scratch directory (its configuration, JetStream's store, credentials).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL, as `kill -9` does.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again with the same configuration.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Waits until the server's monitoring endpoint (`http_port: monitor_port` in its
    /// configuration) reports `n` routes.
    pub(crate) fn wait_routes(&self, monitor_port: u16, n: usize) {
        let t = Instant::now();
        loop {
            let body = monitor_get(monitor_port, "/routez");
            if body.contains(&format!("\"num_routes\": {n}")) {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no {n} routes on {}: {body}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The body of an HTTP GET of `path` on a server's monitoring port (empty if it does not answer).
pub(crate) fn monitor_get(monitor_port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut body = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", monitor_port)) {
        let _ = s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
        let _ = s.read_to_string(&mut body);
    }
    body
}

/// A TCP proxy on a free loopback port that forwards to `target` and can be paused: while
/// paused, bytes in both directions are held back (a partition that leaves the connections
/// open, as a dropped network does).
pub(crate) struct Proxy {
    pub port: u16,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub(crate) fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (paused.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (from, to) in [
                            (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                            (outbound, inbound),
                        ] {
                            let (p, s) = (p.clone(), s.clone());
                            std::thread::spawn(move || pump(from, to, p, s));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, paused, stop }
    }

    pub(crate) fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either end closes or the proxy stops, holding bytes back while
/// paused.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    use std::io::{Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

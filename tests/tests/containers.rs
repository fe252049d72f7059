//! Containers through the real binary (issue 16): `vm up MANIFEST.json` runs several programs in
//! one VM, each with its own grants, names, boundaries and restart type; the example
//! (`examples/containers/`) under load.
//!
//! The programs are in `tests/programs/containers/`; each test writes its manifest into a
//! scratch directory, naming the programs by absolute path.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vm_tests::{RunOutput, repo_root, run_with_timeout};

const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("containers").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The absolute path of a test program.
fn program(name: &str) -> String {
    repo_root().join("tests/programs/containers").join(name).to_string_lossy().into_owned()
}

/// Writes `manifest` into a scratch directory and returns its path.
fn manifest(test: &str, manifest: &str) -> PathBuf {
    let path = scratch(test).join("manifest.json");
    std::fs::write(&path, manifest).expect("writing the manifest");
    path
}

/// Runs `vm up MANIFEST` to its end.
fn up(path: &Path) -> RunOutput {
    let mut cmd = Command::new(VM);
    cmd.arg("up").arg(path).env("NO_COLOR", "1").env_remove("RUST_LOG");
    let run = run_with_timeout(&mut cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{VM}: {e}"));
    assert!(!run.timed_out, "vm up timed out:\n{}\n{}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("panicked"), "vm up panicked:\n{}", run.stderr);
    run
}

/// The lines of `text` that start with `prefix`, without it, in order.
fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

/// A container without grants gets `:permission` naming the flag for `tcp_listen` and
/// `tcp_connect`, and so does an actor it spawns (the child never holds more grants: the Deno
/// leak); a container granted the network beside it in the same VM may listen.
#[test]
fn grants_are_per_container_and_children_get_no_more() {
    let m = manifest(
        "grants",
        &format!(
            r#"{{"containers": [
                {{"name": "store", "module": "{p}"}},
                {{"name": "front", "module": "{p}", "allow_net": ["127.0.0.1"]}}
            ]}}"#,
            p = program("probe.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let store = lines_of(&run.stdout, "[store] ");
    assert_eq!(store.len(), 2, "{}", run.stdout);
    for line in &store {
        assert!(line.contains("listen: {:permission,") && line.contains("--allow-net"), "{line}");
        assert!(line.contains("connect: {:permission,"), "{line}");
    }
    assert!(store[1].starts_with("child "), "{}", store[1]);
    let front = lines_of(&run.stdout, "[front] ");
    assert_eq!(front.len(), 2, "{}", run.stdout);
    for line in &front {
        assert!(line.contains("listen: :ok"), "{line}");
        // Port 9 is closed: the connection is refused by the OS, not by the grants.
        assert!(!line.contains(":permission"), "{line}");
    }
}

/// A function value, a shared table, a socket (and a list holding a function) sent to another
/// container raise `:badarg` and are not delivered; plain data, a pid and a channel cross.
#[test]
fn only_data_pids_and_channels_cross_a_boundary() {
    let m = manifest(
        "boundary",
        &format!(
            r#"{{"containers": [
                {{"name": "inbox", "module": "{}"}},
                {{"name": "sender", "module": "{}", "allow_net": ["127.0.0.1"], "allow_lookup": ["inbox"]}}
            ]}}"#,
            program("inbox.vasm"),
            program("sender.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let sent = lines_of(&run.stdout, "[sender] ");
    assert_eq!(sent.len(), 6, "{}", run.stdout);
    for (line, what) in sent[..5].iter().zip([
        "a function value",
        "a shared table",
        "a resource",
        "a function value",
        "a resource",
    ]) {
        assert!(line.starts_with("{:badarg, ") && line.contains(what), "{line}");
        assert!(line.contains("from container sender to container inbox"), "{line}");
    }
    assert_eq!(sent[5], "sent");
    // Only the tuple arrived.
    assert_eq!(lines_of(&run.stdout, "[inbox] "), vec!["got a :tuple", "quiet"], "{}", run.stdout);
}

/// On a channel another container can reach (looked up, or sent over such a channel), a
/// function value, a list holding one, a shared table (`csend`) and a function (`select` send)
/// raise `:badarg` and nothing arrives; plain data and channels cross. A channel only its own
/// container knows carries a function as before.
#[test]
fn channel_sends_refuse_what_may_not_cross() {
    let m = manifest(
        "chan_boundary",
        &format!(
            r#"{{"containers": [
                {{"name": "inbox", "module": "{}"}},
                {{"name": "sender", "module": "{}", "allow_lookup": ["inbox"]}}
            ]}}"#,
            program("chan_inbox.vasm"),
            program("chan_sender.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let sent = lines_of(&run.stdout, "[sender] ");
    assert_eq!(sent.len(), 9, "{}", run.stdout);
    for (i, what) in [
        (0, "a function value"),
        (1, "a function value"),
        (2, "a shared table"),
        (3, "a function value"),
        (6, "a function value"),
    ] {
        assert!(sent[i].starts_with("{:badarg, ") && sent[i].contains(what), "{}", sent[i]);
        assert!(
            sent[i].contains("another container can reach") && sent[i].contains("nothing was sent"),
            "{}",
            sent[i]
        );
    }
    assert!(sent[0].contains("csend: ") && sent[3].contains("select: "), "{sent:#?}");
    assert_eq!([sent[4], sent[5], sent[7], sent[8]], ["sent", "sent", "sent", "local got a :fun"]);
    assert_eq!(
        lines_of(&run.stdout, "[inbox] "),
        vec!["got a :tuple", "got a :chan", "quiet"],
        "{}",
        run.stdout
    );
}

/// `lookup` of another container's name needs `allow_lookup` of it.
#[test]
fn lookups_need_the_grant() {
    let m = manifest(
        "lookup",
        &format!(
            r#"{{"containers": [
                {{"name": "inbox", "module": "{}"}},
                {{"name": "nosy", "module": "{}"}}
            ]}}"#,
            program("inbox.vasm"),
            program("lookup_denied.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let nosy = lines_of(&run.stdout, "[nosy] ");
    assert_eq!(nosy.len(), 1, "{}", run.stdout);
    assert!(nosy[0].starts_with("{:permission, ") && nosy[0].contains("allow_lookup"), "{}", nosy[0]);
}

/// Killing a temporary container's root ends the container: its other actors are killed, its
/// names withdrawn, monitors in another container get `DOWN`, the supervisor reports it and the
/// other container keeps running.
#[test]
fn a_temporary_container_ends_with_its_root_and_others_carry_on() {
    let m = manifest(
        "temporary",
        &format!(
            r#"{{"containers": [
                {{"name": "victim", "module": "{}"}},
                {{"name": "killer", "module": "{}", "allow_lookup": ["victim"]}}
            ]}}"#,
            program("victim.vasm"),
            program("killer.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        lines_of(&run.stdout, "[killer] "),
        vec![":killed", ":shutdown", "nil", "killer still running"],
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("container victim (temporary) crashed with reason :killed; it stays down"),
        "{}",
        run.stderr
    );
}

/// A channel published as a service stays reachable while no actor holds it: a waiter on it is
/// not orphaned (issue 18: no false alarms), and a client that looks it up later reaches it.
#[test]
fn a_published_channel_is_never_orphaned() {
    let m = manifest(
        "published",
        &format!(
            r#"{{"containers": [
                {{"name": "service", "module": "{}"}},
                {{"name": "client", "module": "{}", "allow_lookup": ["service"], "restart": "temporary"}}
            ]}}"#,
            program("service.vasm"),
            program("client.vasm")
        ),
    );
    let run = up(&m);
    assert!(
        !run.stdout.contains("orphaned") && !run.stderr.contains("orphaned"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(lines_of(&run.stdout, "[service] "), vec!["service got 42"], "{}\n{}", run.stdout, run.stderr);
    assert_eq!(lines_of(&run.stdout, "[client] "), vec!["client sent"], "{}", run.stdout);
}

/// A permanent container's crash stops the VM with status 1, ending the other containers.
#[test]
fn a_permanent_crash_ends_vm_up_with_status_1() {
    let m = manifest(
        "permanent",
        &format!(
            r#"{{"containers": [
                {{"name": "steady", "module": "{}"}},
                {{"name": "core", "module": "{}", "restart": "permanent"}}
            ]}}"#,
            program("forever.vasm"),
            program("crash.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("[core] starting"), "{}", run.stdout);
    assert!(
        run.stderr.contains("permanent container core crashed with reason {:exception, :boom"),
        "{}",
        run.stderr
    );
}

/// A transient container is restarted after a crash, and the restart intensity stops a crash
/// loop: with `max_restarts` 2 it starts three times, then stays down.
#[test]
fn a_transient_container_restarts_until_the_intensity_limit() {
    let m = manifest(
        "transient",
        &format!(
            r#"{{"containers": [
                {{"name": "flaky", "module": "{}", "restart": "transient", "max_restarts": 2,
                  "restart_period_ms": 60000}}
            ]}}"#,
            program("crash.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(lines_of(&run.stdout, "[flaky] "), vec!["starting"; 3], "{}", run.stdout);
    assert_eq!(run.stderr.matches("restarting it").count(), 2, "{}", run.stderr);
    assert!(run.stderr.contains("restart intensity reached"), "{}", run.stderr);
}

/// Each container has its own registry: two containers both register `:db`, send to it by
/// name and find their own actor there.
#[test]
fn each_container_has_its_own_names() {
    let m = manifest(
        "names",
        &format!(
            r#"{{"containers": [
                {{"name": "a", "module": "{p}"}},
                {{"name": "b", "module": "{p}"}}
            ]}}"#,
            p = program("names.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for tag in ["[a] ", "[b] "] {
        assert_eq!(lines_of(&run.stdout, tag), vec!["by name", ":db is mine"], "{}", run.stdout);
    }
}

/// Under `vm up` every line a container writes with `stdout_write` carries its name once, however
/// it was written (in pieces, several lines at once, finished by a `print`, left unfinished at
/// the end); under `vm run` the same program's output is exactly what it wrote.
#[test]
fn stdout_write_lines_carry_the_container_name() {
    let m = manifest(
        "writes",
        &format!(r#"{{"containers": [{{"name": "w", "module": "{}"}}]}}"#, program("writes.vasm")),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        vec!["[w] one piece", "[w] two", "[w] three then print", "[w] last, unfinished"],
        "{}",
        run.stdout
    );
    let mut cmd = Command::new(VM);
    cmd.arg("run").arg(program("writes.vasm")).env("NO_COLOR", "1").env_remove("RUST_LOG");
    let run = run_with_timeout(&mut cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{VM}: {e}"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "one piece\ntwo\nthree then print\nlast, unfinished");
}

/// `limits.max_heap` is the default `:max_heap` of a container's actors: a child spawned with
/// no such option that grows forever is ended with `{:limit, :max_heap}`, and the root goes on.
#[test]
fn max_heap_is_a_container_limit() {
    let m = manifest(
        "max_heap",
        &format!(
            r#"{{"containers": [
                {{"name": "small", "module": "{}", "limits": {{"max_heap": 1000000}}}}
            ]}}"#,
            program("heap.vasm")
        ),
    );
    let run = up(&m);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        lines_of(&run.stdout, "[small] "),
        vec!["{:limit, :max_heap}", "root goes on"],
        "{}",
        run.stdout
    );
    let run = up(&manifest(
        "max_heap_zero",
        &format!(
            r#"{{"containers": [{{"name": "a", "module": "{}", "limits": {{"max_heap": 0}}}}]}}"#,
            program("heap.vasm")
        ),
    ));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("containers[0].limits.max_heap"), "{}", run.stderr);
}

/// Manifest errors are usage errors (status 2) that say where.
#[test]
fn manifest_errors_are_located() {
    let run = up(&manifest("bad_syntax", "{\"containers\": [\n  {\"name\": \"a\", \"modul\": \"x\"}\n]}"));
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("manifest.json:2:"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown field `modul`"), "{}", run.stderr);
    let run = up(&manifest(
        "bad_grant",
        r#"{"containers": [{"name": "a", "module": "a.vasm", "allow_net": ["no such host!"]}]}"#,
    ));
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("manifest.json:containers[0].allow_net: bad --allow-net entry"),
        "{}",
        run.stderr
    );
    let run = up(&manifest("missing_module", r#"{"containers": [{"name": "a", "module": "nowhere.vasm"}]}"#));
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("cannot read") && run.stderr.contains("nowhere.vasm"), "{}", run.stderr);
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// `vm up` running in the background, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to 127.0.0.1:`port`, retrying while the server starts.
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to the example: {e}"),
        }
    }
}

/// The example of examples/containers/ under load: 32 clients at once, each storing and reading
/// back 200 keys of its own through `front`, which forwards every request to `store` over the
/// published channel. Every answer is checked.
#[test]
fn the_example_serves_under_load() {
    let port = free_port();
    let examples = repo_root().join("examples/containers");
    let dir = scratch("example");
    let text = std::fs::read_to_string(examples.join("manifest.json"))
        .expect("the example's manifest")
        .replace("7000", &port.to_string())
        .replace("\"store.vasm\"", &format!("{:?}", examples.join("store.vasm")))
        .replace("\"front.vasm\"", &format!("{:?}", examples.join("front.vasm")));
    let path = dir.join("manifest.json");
    std::fs::write(&path, text).unwrap();
    let _up = Up(Command::new(VM)
        .arg("up")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vm up"));
    let clients: Vec<_> = (0..32)
        .map(|c| {
            std::thread::spawn(move || {
                let stream = connect(port);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut line = String::new();
                for i in 0..200 {
                    write!(writer, "SET k{c}-{i} v{i}\nGET k{c}-{i}\n").unwrap();
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert_eq!(line, "OK\n", "client {c}, key {i}");
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert_eq!(line, format!("v{i}\n"), "client {c}, key {i}");
                }
                writeln!(writer, "GET nothing-here").unwrap();
                line.clear();
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, "nil\n");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
}

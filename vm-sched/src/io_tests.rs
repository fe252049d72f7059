//! I/O seen from programs: natives as effects, resources and their owners, interrupts and
//! timeouts on sockets, permissions, files. Servers listen on 127.0.0.1 port 0.

use crate::testing::{Setup, lines};
use crate::vm::{Config, Outcome};
use std::time::Duration;
use vm_core::Value;
use vm_io::Permissions;

/// Runs `src` with `perms`; `None` if it had not finished after `limit`.
fn run_for(
    src: &str,
    perms: Permissions,
    args: Vec<String>,
    limit: Duration,
) -> (Option<Outcome>, Vec<String>) {
    let config = Config { perms, ..Config::default() };
    crate::testing::run_with(src, Setup { config, args, limit, ..Setup::default() })
}

fn run(src: &str) -> (Outcome, Vec<String>) {
    let (o, lines) = run_for(src, Permissions::all(), vec![], Duration::from_secs(20));
    (o.expect("the program did not finish within 20 s"), lines)
}

/// `main` listens on a free port, connects to itself and accepts: r1 = listener, r2 = the
/// client side, r3 = the server side (both owned by main).
const PAIR: &str = r#"
.func pair 0
    const r0, "127.0.0.1:0"
    native r1, :tcp_listen, r0, 1
    native r0, :local_addr, r1, 1
    native r2, :tcp_connect, r0, 1
    native r3, :tcp_accept, r1, 1
    tuple r0, r1, 3
    ret r0
.end
"#;

#[test]
fn a_handed_over_connection_belongs_to_the_receiver_and_closes_with_it() {
    let src = format!(
        r#"{PAIR}
.func main 0
    call r0, pair, r0, 0
    tget r2, r0, 1
    tget r3, r0, 2
    ; Hand the server side to a writer actor, then try to use it ourselves.
    fun r4, writer
    spawn r5, r4, r3, 1
    try r6, denied
    const r7, "mine\n"
    move r8, r3
    move r9, r7
    native r6, :tcp_write, r8, 2
    endtry
denied:
    tget r6, r6, 0
    print r6
    ; The writer's line arrives; when it exits the connection closes: end of input.
    move r8, r2
    int r9, 100
    native r6, :tcp_read_line, r8, 2
    print r6
    native r6, :tcp_read_line, r8, 2
    print r6
    ret r6
.end

.func writer 1
    move r1, r0
    const r2, "from the writer\n"
    native r3, :tcp_write, r1, 2
    ret r3
.end
"#
    );
    let (o, out) = run(&src);
    assert_eq!(o, Outcome::Exited(Value::Nil));
    assert_eq!(out, lines(&[":not_owner", "b\"from the writer\\n\"", "nil"]));
}

#[test]
fn reads_time_out_lose_nothing_and_refuse_overlong_lines() {
    let src = format!(
        r#"{PAIR}
.func main 0
    call r0, pair, r0, 0
    tget r2, r0, 1
    tget r3, r0, 2
    ; Nothing to read: the deadline passes.
    move r10, r3
    int r11, 100
    int r12, 30
    try r4, late
    native r5, :tcp_read_line, r10, 3
    endtry
late:
    tget r4, r4, 0
    print r4
    ; Half a line, a read that times out, then the rest: the line arrives whole.
    move r13, r2
    const r14, "hel"
    native r5, :tcp_write, r13, 2
    try r4, late2
    native r5, :tcp_read_line, r10, 3
    endtry
late2:
    const r14, "lo\nrest"
    native r5, :tcp_write, r13, 2
    native r5, :tcp_read_line, r10, 2
    print r5
    native r5, :tcp_buffered, r10, 1
    print r5
    ; "rest" stays buffered for a read of up to 3 bytes, then 1.
    int r11, 3
    native r5, :tcp_read, r10, 2
    print r5
    native r5, :tcp_read, r10, 2
    print r5
    ; A line longer than the limit.
    const r14, "0123456789abcdef\n"
    native r5, :tcp_write, r13, 2
    int r11, 8
    try r4, long
    native r5, :tcp_read_line, r10, 2
    endtry
long:
    tget r4, r4, 0
    print r4
    ret r4
.end
"#
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&[":timeout", "b\"hello\\n\"", "4", "b\"res\"", "b\"t\"", ":line_too_long"]));
}

#[test]
fn an_actor_waiting_in_accept_can_be_interrupted_and_is_not_a_deadlock() {
    // main waits in accept until a poker interrupts it (mode 0): the exception is catchable.
    let src = r#"
.func main 0
    const r0, "127.0.0.1:0"
    native r1, :tcp_listen, r0, 1
    self r2
    fun r3, poker
    spawn r4, r3, r2, 1
    try r5, caught
    native r6, :tcp_accept, r1, 1
    endtry
caught:
    print r5
    ret r5
.end

.func poker 1
    int r1, 50
    sleep r1
    const r2, {:stop, "enough"}
    int r3, 0
    interrupt r0, r2, r3
    ret r0
.end
"#;
    let (_, out) = run(src);
    assert_eq!(out, lines(&["{:stop, \"enough\"}"]));

    // A server waiting for connections with every other actor idle is not deadlocked.
    let server = r#"
.func main 0
    const r0, "127.0.0.1:0"
    native r1, :tcp_listen, r0, 1
    native r2, :tcp_accept, r1, 1
    ret r2
.end
"#;
    let (o, _) = run_for(server, Permissions::all(), vec![], Duration::from_millis(300));
    assert_eq!(o, None, "a server in accept must keep waiting, not end");
}

#[test]
fn network_and_files_are_denied_without_permission() {
    let src = r#"
.func main 0
    try r0, a
    const r1, "127.0.0.1:0"
    native r2, :tcp_listen, r1, 1
    endtry
a:
    print r0
    try r0, b
    const r1, "/etc/hostname"
    native r2, :file_read_all, r1, 1
    endtry
b:
    print r0
    try r0, c
    const r1, "/tmp/x"
    const r2, "data"
    native r3, :file_write_all, r1, 2
    endtry
c:
    print r0
    ret r0
.end
"#;
    let (o, out) = run_for(src, Permissions::default(), vec![], Duration::from_secs(10));
    assert!(o.is_some());
    assert_eq!(
        out,
        lines(&[
            "{:permission, \"network access to 127.0.0.1:0 denied: run with --allow-net or --allow-net=127.0.0.1:0\"}",
            "{:permission, \"read access to /etc/hostname denied: run with --allow-read or --allow-read=/etc/hostname\"}",
            "{:permission, \"write access to /tmp/x denied: run with --allow-write or --allow-write=/tmp/x\"}",
        ])
    );
}

#[test]
fn files_round_trip_through_the_blocking_pool() {
    let dir = std::env::temp_dir().join(format!("vm-io-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_string_lossy();
    let src = format!(
        r#"
.func main 0
    const r0, "{d}/a.txt"
    const r1, "hello\nworld\n"
    native r2, :file_write_all, r0, 2
    native r2, :file_read_all, r0, 1
    print r2
    ; Append through an open file, seek, read part of it.
    const r1, :append
    native r3, :file_open, r0, 2
    move r4, r3
    const r5, "more\n"
    native r2, :file_write, r4, 2
    native r2, :close, r3, 1
    print r2
    native r2, :close, r3, 1
    print r2
    const r1, :read
    native r3, :file_open, r0, 2
    move r4, r3
    int r5, 6
    const r6, :start
    native r2, :file_seek, r4, 3
    int r5, 100
    native r2, :file_read, r4, 2
    print r2
    native r2, :file_read, r4, 2
    print r2
    const r0, "{d}"
    native r2, :dir_list, r0, 1
    print r2
    const r0, "{d}/a.txt"
    native r2, :file_remove, r0, 1
    try r2, gone
    native r2, :file_read_all, r0, 1
    endtry
gone:
    tget r2, r2, 0
    print r2
    ret r2
.end
"#
    );
    let perms = Permissions {
        read: Permissions::parse_paths(Some(&d), "--allow-read").unwrap(),
        write: Permissions::parse_paths(Some(&d), "--allow-write").unwrap(),
        ..Default::default()
    };
    let (o, out) = run_for(&src, perms, vec![], Duration::from_secs(10));
    std::fs::remove_dir_all(&dir).ok();
    assert!(o.is_some());
    assert_eq!(
        out,
        lines(&[
            "b\"hello\\nworld\\n\"",
            "true",
            "false",
            "b\"world\\nmore\\n\"",
            "nil",
            "[\"a.txt\"]",
            ":not_found",
        ])
    );
}

#[test]
fn udp_datagrams_carry_their_sender() {
    let src = r#"
.func main 0
    const r0, "127.0.0.1:0"
    native r1, :udp_bind, r0, 1
    native r2, :udp_bind, r0, 1
    native r3, :local_addr, r2, 1
    move r4, r1
    move r5, r3
    const r6, "ping"
    native r7, :udp_send_to, r4, 3
    move r8, r2
    int r9, 100
    int r10, 2000
    native r7, :udp_recv_from, r8, 3
    tget r11, r7, 0
    print r11
    tget r11, r7, 1
    native r12, :local_addr, r1, 1
    eq r13, r11, r12
    print r13
    ret r13
.end
"#;
    let (_, out) = run(src);
    assert_eq!(out, lines(&["b\"ping\"", "true"]));
}

#[test]
fn select_waits_on_sockets_messages_and_listeners_together() {
    // main selects on {:accept, l} and {:msg, _}: first a message arrives (from a helper), then
    // a connection (the helper connects). Then it selects on {:readable, conn} and {:msg, _}:
    // a message first, then the peer's line.
    let src = r#"
.func main 0
    const r0, "127.0.0.1:0"
    native r1, :tcp_listen, r0, 1
    native r2, :local_addr, r1, 1
    self r3
    fun r4, helper
    move r5, r3
    move r6, r2
    spawn r7, r4, r5, 2
    const r8, :accept
    move r9, r1
    tuple r20, r8, 2
    const r21, {:msg, :_}
    list r10, r20, 2
    int r11, -1
    select r12, r10, r11, never
    print r12
    select r12, r10, r11, never
    tget r13, r12, 1
    print r13
    tget r13, r12, 2
    ; Now the connection and the mailbox.
    const r8, :readable
    move r9, r13
    tuple r20, r8, 2
    list r10, r20, 2
    send r7, r3
    select r12, r10, r11, never
    print r12
    select r12, r10, r11, never
    print r12
    move r15, r13
    int r16, 100
    native r12, :tcp_read_line, r15, 2
    print r12
    ret r12
never:
    ret r12
.end

.func helper 2
    const r2, :hello
    send r0, r2
    int r3, 30
    sleep r3
    native r4, :tcp_connect, r1, 1
    recv r5
    const r2, :again
    send r0, r2
    sleep r3
    move r6, r4
    const r7, "line\n"
    native r8, :tcp_write, r6, 2
    recv r5
    ret r5
.end
"#;
    let (o, out) = run(src);
    assert!(matches!(o, Outcome::Exited(_)), "{o:?}");
    assert_eq!(
        out,
        lines(&["{1, :ok, :hello}", ":ok", "{1, :ok, :again}", "{0, :readable}", "b\"line\\n\""])
    );
}

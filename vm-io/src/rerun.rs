//! Which natives may run again after a restore.
//!
//! A snapshot never waits for a native call in flight (an awaited socket operation, a call on
//! the blocking pool): the actor is saved on its `native` instruction, and whether the call
//! completed, and how, is unknown. After a restore the runtime asks [`may_rerun`]:
//! 1. A native that may run again (opening, reading, accepting, binding, resolving, listing)
//!    simply runs again: doing it twice is no different from doing it once, or the first run's
//!    effect died with the old process (an accepted connection, a connection made).
//! 2. One that may not (writing, sending, removing, a relative seek) raises `:unknown_outcome`
//!    at the instruction instead, so that the program decides: a write may have reached the
//!    peer or the file, or not.
//!
//! Every native that can be in flight (async or blocking; an inline one completes inside the
//! step, so never is) is listed in [`RERUN`]: a test fails until a new one is classified.

use crate::natives::{self, Kind};

/// Each native that can be in flight, and whether it may run again after a restore.
pub const RERUN: &[(&str, bool)] = &[
    ("tcp_listen", true),
    ("tcp_accept", true),
    ("tcp_connect", true),
    ("tcp_read", true),
    ("tcp_read_exact", true),
    ("tcp_read_line", true),
    ("tcp_read_resp", true),
    ("tcp_write", false),
    ("tcp_write_resp", false),
    ("udp_bind", true),
    ("udp_send_to", false),
    ("udp_recv_from", true),
    ("file_open", true),
    ("file_read", true),
    ("file_write", false),
    // Relative to a position that the lost call may or may not have moved.
    ("file_seek", false),
    ("file_read_all", true),
    // Replaces the whole file with the same bytes: twice is once.
    ("file_write_all", true),
    ("dir_list", true),
    // A second run of a removal that succeeded fails with `:not_found`.
    ("file_remove", false),
    ("stdin_read_line", true),
    ("resolve", true),
    // The cluster: a remote spawn may have started its actor; a registration may have won.
    // Looking a name up, or removing it, again is the same as once.
    ("spawn_on", false),
    ("global_register", false),
    ("global_whereis", true),
    ("global_unregister", true),
    // Not run again: a VM resumed from the snapshot it was taking returns `:resumed` instead.
    ("vm_snapshot", false),
    // SQLite (thread-affine): reads and opening run again, changes do not. (A connection itself
    // does not survive a restore: using one raises `:lost`.)
    ("sqlite_open", true),
    ("sqlite_query", true),
    ("sqlite_last_id", true),
    ("sqlite_close", true),
    ("sqlite_exec", false),
    ("sqlite_transaction", false),
    // The affine test natives (probes).
    ("affine_echo", true),
    ("affine_main_probe", true),
    ("affine_panic", true),
    ("affine_sleep", true),
    ("affine_hold", true),
    ("affine_res_new", true),
    ("affine_res_closes", true),
    ("affine_probe", false),
    ("affine_log", false),
    ("affine_log_take", false),
    ("affine_res_use", false),
    ("affine_res_use_elsewhere", false),
    ("sleep_blocking", true),
    ("panic", true),
    ("panic_poll", true),
    ("panic_start", true),
];

/// Whether native `name`, in flight when a snapshot was taken, may simply run again after the
/// restore (else the restore raises `:unknown_outcome` at the instruction). An unknown name may
/// not: its outcome cannot be known either.
pub fn may_rerun(name: &str) -> bool {
    RERUN.iter().any(|&(n, rerun)| n == name && rerun)
}

/// Every native of this build that can be in flight when a snapshot is taken, by name.
pub fn in_flight_natives() -> impl Iterator<Item = &'static str> {
    natives::all().filter(|n| n.kind() != Kind::Inline).map(|n| n.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_native_that_can_be_in_flight_is_classified_once() {
        // (Unit tests have the test natives too: every row is then in use.)
        let mut listed: Vec<&str> = RERUN.iter().map(|&(n, _)| n).collect();
        let mut want: Vec<&str> = in_flight_natives().collect();
        listed.sort_unstable();
        want.sort_unstable();
        assert_eq!(listed, want, "classify every async and blocking native in RERUN, exactly once");
    }

    #[test]
    fn writes_sends_and_removals_are_not_run_twice() {
        for name in ["tcp_write", "tcp_write_resp", "udp_send_to", "file_write", "file_remove"] {
            assert!(!may_rerun(name), "{name}");
        }
        for name in ["tcp_read", "tcp_accept", "file_open", "file_read", "resolve"] {
            assert!(may_rerun(name), "{name}");
        }
        assert!(!may_rerun("no_such_native"));
    }
}

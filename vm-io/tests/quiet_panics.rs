//! The panic hook of `vm_io::natives` (its module docs, "Caught panics are quiet"), in a process
//! of its own because a panic hook is global: a native's panic caught by `guarded` reaches no
//! earlier hook (so nothing is printed), while any other panic still does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use vm_core::{Value, atoms};
use vm_io::natives::{guarded, panicked};

struct NoConsole;

impl vm_io::Console for NoConsole {
    fn stdout(&self, _: &[u8]) {}
    fn stderr(&self, _: &[u8]) {}
}

#[test]
fn caught_native_panics_skip_the_hook_and_other_panics_reach_it() {
    // Stands for Rust's default hook, which prints the message and the backtrace.
    let printed = Arc::new(AtomicUsize::new(0));
    let seen = printed.clone();
    std::panic::set_hook(Box::new(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let _io = vm_io::Io::new(vm_io::Permissions::default(), Arc::new(NoConsole));

    for _ in 0..3 {
        let e = guarded(|| panic!("boom in a native")).unwrap_err();
        assert_eq!(e.kind, atoms::PANIC);
        assert_eq!(e.msg.to_string(), panicked("boom in a native").msg.to_string());
    }
    assert_eq!(guarded(|| Ok(Value::Int(7))).unwrap(), Value::Int(7));
    assert_eq!(printed.load(Ordering::SeqCst), 0, "a caught native panic reached the printing hook");

    // A panic outside a native call (a bug in the VM) is printed as before, on any thread, also
    // on the thread that has just run a native.
    let _ = std::thread::spawn(|| panic!("a VM bug")).join();
    assert_eq!(printed.load(Ordering::SeqCst), 1);
    let _ = std::panic::catch_unwind(|| panic!("another bug"));
    assert_eq!(printed.load(Ordering::SeqCst), 2);
}

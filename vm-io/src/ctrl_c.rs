//! Ctrl-C (SIGINT) caught instead of ending the process, for an interactive caller (`vm repl`'s
//! session, which turns a press into an interrupt of the running snippet).
//!
//! [`CtrlC::new`] registers the listener at once, so there is no moment after it where a Ctrl-C
//! would kill the process; the handler stays installed for the life of the process. Presses
//! queue up until read: [`CtrlC::forget_earlier`] drops those already received, and
//! [`CtrlC::pressed`] waits for the next one.

/// A SIGINT listener; see the module docs.
pub struct CtrlC {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl CtrlC {
    /// Starts catching SIGINT. Must be called inside a tokio runtime.
    #[cfg(unix)]
    pub fn new() -> std::io::Result<CtrlC> {
        Ok(CtrlC { signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())? })
    }

    /// Catching Ctrl-C needs a Unix system here.
    #[cfg(not(unix))]
    pub fn new() -> std::io::Result<CtrlC> {
        Err(std::io::Error::other("catching Ctrl-C needs a Unix system"))
    }

    /// Drops Ctrl-Cs received before now.
    pub fn forget_earlier(&mut self) {
        #[cfg(unix)]
        while futures_now(self.signal.recv()).flatten().is_some() {}
    }

    /// Waits for the next Ctrl-C.
    pub async fn pressed(&mut self) {
        #[cfg(unix)]
        if self.signal.recv().await.is_some() {
            return;
        }
        // No way to listen any more: never fires.
        std::future::pending::<()>().await
    }
}

/// Polls `fut` once: its output if it is ready now.
#[cfg(unix)]
fn futures_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_caught_ctrl_c_is_seen_and_does_not_end_the_process() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = CtrlC::new().unwrap();
            c.forget_earlier();
            // SIGINT to this very process (through kill(1)): without the listener it would end
            // the test binary.
            let pid = std::process::id().to_string();
            let status = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
            assert!(status.success());
            tokio::time::timeout(std::time::Duration::from_secs(10), c.pressed())
                .await
                .expect("the press arrives");
        });
    }
}

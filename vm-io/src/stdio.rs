//! Standard streams and the environment: `stdin_read_line`, `stdout_write`, `stderr_write`,
//! `env_get`.
//!
//! Standard input is shared by the whole VM: one reader at a time holds its lock, and the bytes
//! read past a line stay in [`StdinState`] for the next reader, so lines are never split or lost,
//! even when a read is cancelled by a timeout or an interrupt (the lock is an async mutex held
//! across the wait, and `read_buf` on tokio's stdin keeps data it has not handed over).

use crate::natives::{
    Ctx, NativeResult, Started, arg, data_arg, io_error, str_arg, timeout_arg, with_timeout,
};
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use vm_core::{Exception, Value};

/// The VM's standard input and its unread bytes.
#[derive(Default)]
pub struct StdinState {
    reader: Option<tokio::io::Stdin>,
    buf: BytesMut,
    eof: bool,
}

pub(crate) fn stdin_read_line(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let timeout = match timeout_arg("stdin_read_line", arg(args, 0)) {
        Ok(t) => t,
        Err(e) => return Started::Done(Err(e)),
    };
    let io = ctx.io.clone();
    Started::Pending(with_timeout("stdin_read_line", timeout, async move {
        let mut st = io.stdin.lock().await;
        let StdinState { reader, buf, eof } = &mut *st;
        loop {
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                return Ok(Value::bytes(buf.split_to(i + 1).freeze()));
            }
            if *eof {
                let n = buf.len();
                return Ok(if n == 0 { Value::Nil } else { Value::bytes(buf.split_to(n).freeze()) });
            }
            buf.reserve(4096);
            let r = reader.get_or_insert_with(tokio::io::stdin).read_buf(buf).await;
            match r {
                Ok(0) => *eof = true,
                Ok(_) => {}
                Err(e) => return Err(io_error("stdin_read_line", &e)),
            }
        }
    }))
}

pub(crate) fn stdout_write(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    ctx.console.stdout(data_arg("stdout_write", &args[0])?);
    Ok(Value::Nil)
}

pub(crate) fn stderr_write(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    ctx.console.stderr(data_arg("stderr_write", &args[0])?);
    Ok(Value::Nil)
}

pub(crate) fn env_get(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let name = str_arg("env_get", &args[0])?;
    if !crate::perms::valid_env_name(&name) {
        return Err(Exception::badarg(format!("env_get: {name:?} is not a variable name")));
    }
    // A container's own variables need no grant: its manifest gave them to it.
    if let Some((_, v)) = ctx.grants.env.iter().find(|(k, _)| *k == *name) {
        return Ok(Value::str(v.as_str()));
    }
    ctx.grants.perms.check_env(&name)?;
    Ok(std::env::var(&*name).map_or(Value::Nil, Value::str))
}

/// Writes bytes to the process's standard error (unbuffered, so they appear at once). A failed
/// write is ignored: there is nowhere left to report it.
pub fn write_stderr(bytes: &[u8]) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(bytes);
}

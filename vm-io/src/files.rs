//! File and directory natives. They run on tokio's blocking pool (the actor is real-blocked):
//! file I/O has no readiness-based async form, which is also why `tokio::fs` uses that pool.
//! Each acts on a path only through `confine::with_path`, which checks `--allow-read` /
//! `--allow-write` and opens beneath the granted directory, so a symbolic link cannot lead out.

use crate::confine::{Access, with_path};
use crate::natives::{Ctx, NativeResult, atom_arg, data_arg, int_arg, io_error, size_arg, str_arg};
use crate::resource::Obj;
use cap_std::fs::OpenOptions;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Mutex;
use vm_core::{Exception, Value};

fn with_file<R>(
    ctx: &Ctx<'_>,
    what: &str,
    v: &Value,
    f: impl FnOnce(&mut File) -> std::io::Result<R>,
) -> Result<R, Exception> {
    let obj = ctx.obj(what, v)?;
    let Obj::File(file) = &*obj else {
        return Err(Exception::type_error(format!("{what}: expected a file")));
    };
    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut file).map_err(|e| io_error(what, &e))
}

pub(crate) fn file_open(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let path = str_arg("file_open", &args[0])?;
    let mode = atom_arg("file_open: mode", &args[1])?.name();
    let mut o = OpenOptions::new();
    let needs: &[Access] = match &*mode {
        "read" => {
            o.read(true);
            &[Access::Read]
        }
        "write" => {
            o.write(true).create(true).truncate(true);
            &[Access::Write]
        }
        "append" => {
            o.append(true).create(true);
            &[Access::Write]
        }
        "create_new" => {
            o.write(true).create_new(true);
            &[Access::Write]
        }
        "read_write" => {
            o.read(true).write(true).create(true);
            &[Access::Read, Access::Write]
        }
        other => {
            return Err(Exception::badarg(format!(
                "file_open: unknown mode :{other} (use :read, :write, :append, :create_new or :read_write)"
            )));
        }
    };
    let file =
        with_path(&ctx.grants.perms, &path, needs, &format!("file_open {path}"), |place| place.open(&o))?;
    // Opened again after a restore as it is now: never created or truncated a second time.
    let (read, append) = (matches!(&*mode, "read" | "read_write"), &*mode == "append");
    let reopen = crate::reopen::Reopen::File {
        path: path.to_string(),
        read,
        write: !read || &*mode == "read_write",
        append,
    };
    Ok(ctx.io.adopt_as(ctx.pid, Obj::File(Mutex::new(file)), path.into_owned(), reopen))
}

pub(crate) fn file_read(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let max = size_arg("file_read", &args[1])?;
    with_file(ctx, "file_read", &args[0], |f| {
        let mut buf = Vec::with_capacity(max.min(1 << 20));
        Read::by_ref(f).take(max as u64).read_to_end(&mut buf)?;
        Ok(if buf.is_empty() && max > 0 { Value::Nil } else { Value::bytes(buf) })
    })
}

pub(crate) fn file_write(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let data = data_arg("file_write", &args[1])?;
    with_file(ctx, "file_write", &args[0], |f| f.write_all(data))?;
    Ok(Value::Nil)
}

pub(crate) fn file_seek(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let off = int_arg("file_seek", &args[1])?;
    let whence = atom_arg("file_seek: whence", &args[2])?.name();
    let pos = match &*whence {
        "start" if off >= 0 => SeekFrom::Start(off as u64),
        "start" => return Err(Exception::badarg(format!("file_seek: negative offset {off} from :start"))),
        "current" => SeekFrom::Current(off),
        "end" => SeekFrom::End(off),
        other => {
            return Err(Exception::badarg(format!(
                "file_seek: unknown whence :{other} (use :start, :current or :end)"
            )));
        }
    };
    let new = with_file(ctx, "file_seek", &args[0], |f| f.seek(pos))?;
    Ok(Value::Int(new as i64))
}

pub(crate) fn file_read_all(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let path = str_arg("file_read_all", &args[0])?;
    let what = format!("file_read_all {path}");
    let data = with_path(&ctx.grants.perms, &path, &[Access::Read], &what, |place| {
        let mut data = Vec::new();
        place.open(OpenOptions::new().read(true))?.read_to_end(&mut data)?;
        Ok(data)
    })?;
    Ok(Value::bytes(data))
}

pub(crate) fn file_write_all(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let path = str_arg("file_write_all", &args[0])?;
    let data = data_arg("file_write_all", &args[1])?;
    let what = format!("file_write_all {path}");
    with_path(&ctx.grants.perms, &path, &[Access::Write], &what, |place| {
        place.open(OpenOptions::new().write(true).create(true).truncate(true))?.write_all(data)
    })?;
    Ok(Value::Nil)
}

pub(crate) fn dir_list(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let path = str_arg("dir_list", &args[0])?;
    let what = format!("dir_list {path}");
    let mut names = with_path(&ctx.grants.perms, &path, &[Access::Read], &what, |place| {
        place
            .open_dir()?
            .entries()?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<String>>>()
    })?;
    names.sort();
    Ok(Value::list(names.into_iter().map(Value::str).collect()))
}

pub(crate) fn file_remove(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let path = str_arg("file_remove", &args[0])?;
    with_path(&ctx.grants.perms, &path, &[Access::Write], &format!("file_remove {path}"), |place| {
        place.remove()
    })?;
    Ok(Value::Nil)
}

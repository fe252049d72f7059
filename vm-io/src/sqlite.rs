//! SQLite natives: an embedded database (the `rusqlite` crate, SQLite built from source with it,
//! so nothing needs installing), the first thread-affine natives (see [`crate::affine`]).
//!
//! 1. `sqlite_open` runs on an executor thread of its own (`Bind::Fresh`), which the connection
//!    then lives on: a `Connection` is `Send` but not `Sync`, so one thread per connection is its
//!    natural home, and every call on it is serialised there. The other natives are bound to
//!    the thread of the connection they are given (`Bind::Arg0`).
//! 2. The handle has no owner: any actor holding it may use it, as with shared tables. Its
//!    close runs on its thread (`sqlite_close`, or when the last handle goes).
//! 3. Permissions: a file needs `--allow-read` (opened `:read`) or both `--allow-read` and
//!    `--allow-write`; `":memory:"` needs nothing. The path is checked and the file opened (or
//!    created) beneath the granted directory by [`crate::confine::with_path`], the one check
//!    for paths; SQLite is then given that file's real path, free of symbolic links, with
//!    `SQLITE_OPEN_NOFOLLOW`, so it refuses a path that has gained a link since; SQLite opens
//!    every file (database, journal, WAL) with `O_NOFOLLOW` as well. The journal and WAL files
//!    beside the database must lie under the write grant too. URI file names are off: a name
//!    is a path.
//! 4. Values cross exactly: nil is NULL, an int an INTEGER (all 64 bits), a float a REAL, a
//!    string TEXT, bytes a BLOB, and back; true and false are stored as 1 and 0 (SQLite has no
//!    booleans). Anything else is refused with `:type_error`. Parameters are positional (`?`),
//!    given as a list.
//! 5. SQL errors raise `:sql` with SQLite's message; a database locked by another connection
//!    past the busy timeout (5 s, rusqlite's default; `PRAGMA busy_timeout` changes it) raises
//!    `:busy`. Statements are prepared once per connection and kept (64 per connection).
//! 6. Transactions: `BEGIN`/`COMMIT` by SQL suit a connection one actor uses. A connection
//!    shared by several actors serialises each *call*, not a sequence of calls, so their
//!    statements would interleave inside one actor's transaction: `sqlite_transaction` runs a
//!    list of statements as one call, all or nothing.

use crate::affine;
use crate::confine::{Access, Place, with_path};
use crate::natives::{Ctx, NativeResult, arg, atom_arg, str_arg};
use cap_std::fs::OpenOptions;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};
use std::path::PathBuf;
use vm_core::{Atom, Exception, Value};

const KIND: &str = "a sqlite connection";

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// `sqlite_open(path, [mode])`: mode `:read_write` (the default; creates the file) or `:read`.
pub(crate) fn sqlite_open(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let path = str_arg("sqlite_open", &args[0])?;
    let read_only = match arg(args, 1) {
        Value::Nil => false,
        mode => match &*atom_arg("sqlite_open: mode", mode)?.name() {
            "read" => true,
            "read_write" => false,
            other => {
                return Err(Exception::badarg(format!(
                    "sqlite_open: unknown mode :{other} (use :read or :read_write)"
                )));
            }
        },
    };
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
    flags |= if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    };
    let target = if path == ":memory:" {
        PathBuf::from(":memory:")
    } else {
        let (real, confined) = checked_path(ctx, &path, read_only)?;
        if confined {
            flags |= OpenFlags::SQLITE_OPEN_NOFOLLOW;
        }
        real
    };
    let conn = Connection::open_with_flags(&target, flags).map_err(|e| sql_error("sqlite_open", &e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    affine::adopt(ctx.io.next_handle_id(), conn, format!("sqlite connection {path}"))
}

/// Rule 3: checks `path` against the grants and opens (or creates) it beneath them; returns the
/// path to give SQLite and whether it was confined (then it is the file's real path).
fn checked_path(ctx: &Ctx<'_>, path: &str, read_only: bool) -> Result<(PathBuf, bool), Exception> {
    let needs: &[Access] = if read_only { &[Access::Read] } else { &[Access::Read, Access::Write] };
    let what = format!("sqlite_open {path}");
    let (real, confined) = with_path(&ctx.grants.perms, path, needs, &what, |place| match place {
        Place::Anywhere(p) => Ok((p.to_path_buf(), false)),
        Place::Beneath(..) => {
            let mut o = OpenOptions::new();
            o.read(true);
            if !read_only {
                o.write(true).create(true);
            }
            let file = place.open(&o)?;
            Ok((real_path_of(&file)?, true))
        }
    })?;
    if !read_only && confined {
        // The files SQLite keeps beside the database: checked by name (they need not exist).
        for suffix in ["-journal", "-wal", "-shm"] {
            with_path(&ctx.grants.perms, &format!("{path}{suffix}"), &[Access::Write], &what, |_| Ok(()))?;
        }
    }
    Ok((real, confined))
}

/// Where an open file really is: the kernel's name for its descriptor, links resolved.
fn real_path_of(file: &std::fs::File) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// `sqlite_exec(db, sql, [params])` → how many rows the statement changed.
pub(crate) fn sqlite_exec(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let sql = str_arg("sqlite_exec", &args[1])?;
    let params = params_arg("sqlite_exec", arg(args, 2))?;
    let n = affine::with("sqlite_exec", KIND, &args[0], |conn: &mut Connection| {
        exec("sqlite_exec", conn, &sql, params)
    })??;
    Ok(Value::Int(n))
}

/// Runs one statement → how many rows it changed.
fn exec(what: &str, conn: &Connection, sql: &str, params: &[Value]) -> Result<i64, Exception> {
    let n = match conn.prepare_cached(sql) {
        Ok(mut stmt) => run(conn, &mut stmt, params),
        // A script of several statements (a schema, say), without parameters.
        Err(rusqlite::Error::MultipleStatement) if params.is_empty() => {
            conn.execute_batch(sql).map(|()| conn.changes() as usize)
        }
        Err(e) => Err(e),
    };
    n.map(|n| n as i64).map_err(|e| sql_error(what, &e))
}

/// Runs a prepared statement with `params` → how many rows it changed. A statement that returns
/// rows (a PRAGMA that answers, an INSERT ... RETURNING) runs to its end; its rows are dropped.
fn run(conn: &Connection, stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> rusqlite::Result<usize> {
    let params = rusqlite::params_from_iter(params.iter().map(Param));
    if stmt.column_count() == 0 {
        return stmt.execute(params);
    }
    let writes = !stmt.readonly();
    let mut rows = stmt.query(params)?;
    while rows.next()?.is_some() {}
    Ok(if writes { conn.changes() as usize } else { 0 })
}

/// `sqlite_query(db, sql, [params])` → the rows, each a list of values.
pub(crate) fn sqlite_query(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let sql = str_arg("sqlite_query", &args[1])?;
    let params = params_arg("sqlite_query", arg(args, 2))?;
    affine::with("sqlite_query", KIND, &args[0], |conn: &mut Connection| {
        let fail = |e: rusqlite::Error| sql_error("sqlite_query", &e);
        let mut stmt = conn.prepare_cached(&sql).map_err(fail)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(Param))).map_err(fail)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(fail)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(from_sql(row.get_ref(i).map_err(fail)?));
            }
            out.push(Value::list(values));
        }
        Ok(Value::list(out))
    })?
}

/// `sqlite_transaction(db, statements)`: each statement a `{sql, params}` tuple (or a list of
/// the two), run in order as one transaction (a savepoint inside an open one): all of them or,
/// when one fails, none, and the failure is raised. → the total of rows changed.
pub(crate) fn sqlite_transaction(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let what = "sqlite_transaction";
    let Value::List(stmts) = &args[1] else {
        return Err(Exception::type_error(format!(
            "{what}: expected a list of {{sql, params}}, got {}",
            args[1].repr()
        )));
    };
    let mut parsed = Vec::with_capacity(stmts.len());
    for s in stmts.iter() {
        let (sql, params) = match s {
            Value::Tuple(p) | Value::List(p) if p.len() == 2 => (&p[0], &p[1]),
            other => {
                return Err(Exception::type_error(format!(
                    "{what}: expected {{sql, params}}, got {}",
                    other.repr()
                )));
            }
        };
        parsed.push((str_arg(what, sql)?, params_arg(what, params)?));
    }
    affine::with(what, KIND, &args[0], |conn: &mut Connection| {
        let sp = conn.savepoint().map_err(|e| sql_error(what, &e))?;
        let mut total = 0;
        {
            // A statement repeated with other parameters (a batch of inserts) is taken from
            // the cache once and run again, as a program in Rust would.
            let mut last: Option<(&str, rusqlite::CachedStatement<'_>)> = None;
            for (sql, params) in &parsed {
                // On an error the savepoint is dropped unreleased: everything rolls back.
                match &mut last {
                    Some((prev, stmt)) if *prev == &**sql => {
                        total += run(&sp, stmt, params).map_err(|e| sql_error(what, &e))? as i64;
                    }
                    _ => {
                        last = None;
                        match sp.prepare_cached(sql) {
                            Ok(mut stmt) => {
                                total += run(&sp, &mut stmt, params).map_err(|e| sql_error(what, &e))? as i64;
                                last = Some((sql, stmt));
                            }
                            Err(_) => total += exec(what, &sp, sql, params)?,
                        }
                    }
                }
            }
        }
        sp.commit().map_err(|e| sql_error(what, &e))?;
        Ok(Value::Int(total))
    })?
}

/// `sqlite_last_id(db)`: the rowid of the last row inserted on this connection.
pub(crate) fn sqlite_last_id(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    affine::with("sqlite_last_id", KIND, &args[0], |conn: &mut Connection| {
        Value::Int(conn.last_insert_rowid())
    })
}

/// `sqlite_close(db)`: closes the connection now → true, or false if it was closed already.
pub(crate) fn sqlite_close(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    affine::close("sqlite_close", &args[0]).map(Value::Bool)
}

/// The parameter list (`nil`: none).
fn params_arg<'v>(what: &str, v: &'v Value) -> Result<&'v [Value], Exception> {
    match v {
        Value::Nil => Ok(&[]),
        Value::List(items) => Ok(items),
        other => {
            Err(Exception::type_error(format!("{what}: parameters must be a list, got {}", other.repr())))
        }
    }
}

/// A value bound to a statement's parameter (rule 4).
struct Param<'v>(&'v Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let r = match self.0 {
            Value::Nil => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Float(f) => ValueRef::Real(*f),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Str(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
            other => {
                let msg = format!("a {} cannot be stored in SQLite: {}", other.type_atom(), other.repr());
                return Err(rusqlite::Error::ToSqlConversionFailure(msg.into()));
            }
        };
        Ok(ToSqlOutput::Borrowed(r))
    }
}

/// A column's value (rule 4). Text that is not UTF-8 (SQLite does not check) comes back as bytes.
fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Nil,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::str(s),
            Err(_) => Value::bytes(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::bytes(b.to_vec()),
    }
}

/// Rule 5: `:busy` for a locked database, `:type_error` for a value SQLite cannot hold, `:sql`
/// for everything else, with SQLite's message.
fn sql_error(what: &str, e: &rusqlite::Error) -> Exception {
    let kind = match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            "busy"
        }
        rusqlite::Error::ToSqlConversionFailure(_) => "type_error",
        _ => "sql",
    };
    Exception::new(Atom::new(kind), format!("{what}: {e}"))
}

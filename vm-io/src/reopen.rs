//! Resources across a snapshot: what a resource records about how it was opened, the reopen
//! recipe a snapshot stores for it, and opening it again in a restored VM.
//!
//! 1. When a native opens something it records a [`Reopen`]: the address as the program wrote
//!    it (with the port actually bound, so that `:0` comes back on the same port), or the path
//!    and mode of a file.
//! 2. A snapshot asks [`Resource::recipe`]: a listener or UDP socket gives its address, a file its
//!    path, mode and position (a file busy in a native call at that moment, whose position is
//!    unknown, is lost), a connection is always lost (it cannot survive a process), a closed
//!    resource stays closed.
//! 3. A restore calls [`Io::reopen`] with the recipe and the resource's old id and owner: it
//!    checks the *resumed* VM's permissions (grants are never stored; [`Io::reopen_under`]: the
//!    owner's container's, from a manifest), binds the address again
//!    or opens the file again (never creating or truncating it) and seeks; anything that fails
//!    gives a resource whose every use raises `:lost`, saying why.

use crate::net::{Listener, listen};
use crate::resource::{Io, Obj, Resource};
use std::io::{Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use vm_core::Value;
use vm_core::snapshot::v1::Recipe;

/// How a resource was opened (step 1 of the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reopen {
    /// Cannot be opened again (a connection).
    Never,
    /// A TCP listener on this address.
    Listener(String),
    /// A UDP socket bound to this address.
    Udp(String),
    /// A file opened with these options.
    File {
        /// The path as the program wrote it.
        path: String,
        /// Opened for reading.
        read: bool,
        /// Opened for writing.
        write: bool,
        /// Opened for appending.
        append: bool,
    },
}

/// `written` (`host:port` as the program wrote it) with the port that was actually bound.
pub(crate) fn bound_address(written: &str, bound: Option<std::net::SocketAddr>) -> String {
    match (written.rsplit_once(':'), bound) {
        (Some((host, _)), Some(a)) => format!("{host}:{}", a.port()),
        _ => written.to_string(),
    }
}

impl Resource {
    /// Its reopen recipe (step 2 of the module docs). Never waits: a file that a native call is
    /// using at this moment is recorded as lost.
    pub fn recipe(&self) -> Recipe {
        let obj = self.obj.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(obj) = obj else {
            return if self.lost.is_some() { Recipe::Lost } else { Recipe::Closed };
        };
        match (&self.reopen, &*obj) {
            (Reopen::Listener(addr), Obj::Listener(_)) => Recipe::Listener { addr: addr.clone() },
            (Reopen::Udp(addr), Obj::Udp(_)) => Recipe::Udp { addr: addr.clone() },
            (Reopen::File { path, read, write, append }, Obj::File(f)) => {
                let Ok(mut f) = f.try_lock() else { return Recipe::Lost };
                match (f.stream_position(), f.metadata()) {
                    (Ok(pos), Ok(meta)) => Recipe::File {
                        path: path.clone(),
                        read: *read,
                        write: *write,
                        append: *append,
                        pos,
                        len: meta.len(),
                    },
                    _ => Recipe::Lost,
                }
            }
            _ => Recipe::Lost,
        }
    }

    /// Its handle id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Io {
    /// Opens resource `id` again for `owner` from its recipe (step 3 of the module docs) and
    /// returns its handle, open, closed or lost. `label` is what it was (`tcp listener
    /// 127.0.0.1:6379`), kept for messages and introspection.
    pub async fn reopen(self: &Arc<Io>, id: u64, owner: u64, label: &str, recipe: &Recipe) -> Value {
        let perms = self.grants.perms.clone();
        self.reopen_under(&perms, id, owner, label, recipe).await
    }

    /// [`Io::reopen`] under `perms`, the grants of the owner's container (a resumed VM of
    /// several containers: each gets those of its manifest entry).
    pub async fn reopen_under(
        self: &Arc<Io>,
        perms: &crate::Permissions,
        id: u64,
        owner: u64,
        label: &str,
        recipe: &Recipe,
    ) -> Value {
        let label = label.to_string();
        let (obj, reopen) =
            match recipe {
                Recipe::Closed => return self.install(id, owner, None, label, Reopen::Never, None),
                Recipe::Lost => {
                    let why = match label.split(' ').next() {
                        Some("file") => "it was in use when the snapshot was taken",
                        _ => "a connection does not survive a restart",
                    };
                    return self.install(id, owner, None, label, Reopen::Never, Some(why.into()));
                }
                Recipe::Listener { addr } => {
                    let l = bind_again(perms, addr, "tcp_listen", |a| async move { listen(&a).await }).await;
                    (l.map(|l| Obj::Listener(Listener::new(l))), Reopen::Listener(addr.clone()))
                }
                Recipe::Udp { addr } => {
                    let u = bind_again(perms, addr, "udp_bind", |a| async move {
                        tokio::net::UdpSocket::bind(&a).await
                    })
                    .await;
                    (u.map(Obj::Udp), Reopen::Udp(addr.clone()))
                }
                Recipe::File { path, read, write, append, pos, .. } => {
                    let f = open_again(perms, path, *read, *write, *append, *pos);
                    let reopen =
                        Reopen::File { path: path.clone(), read: *read, write: *write, append: *append };
                    (f.map(|f| Obj::File(Mutex::new(f))), reopen)
                }
            };
        match obj {
            Ok(obj) => self.install(id, owner, Some(obj), label, reopen, None),
            Err(why) => self.install(id, owner, None, label, reopen, Some(why)),
        }
    }
}

/// Binds `addr` again for a restored listener or UDP socket, if `perms` grant it.
async fn bind_again<T, F: std::future::Future<Output = std::io::Result<T>>>(
    perms: &crate::Permissions,
    addr: &str,
    what: &str,
    bind: impl FnOnce(String) -> F,
) -> Result<T, String> {
    perms.check_net(addr).map_err(|e| e.msg.to_string())?;
    bind(addr.to_string()).await.map_err(|e| format!("{what} {addr} again: {e}"))
}

/// Opens a restored file again beneath `perms`, at `pos`, never creating or truncating it.
fn open_again(
    perms: &crate::Permissions,
    path: &str,
    read: bool,
    write: bool,
    append: bool,
    pos: u64,
) -> Result<std::fs::File, String> {
    use crate::confine::{Access, with_path};
    let mut needs = Vec::new();
    if read {
        needs.push(Access::Read);
    }
    if write || append {
        needs.push(Access::Write);
    }
    // Never create or truncate: the file is the one the program had open, or it is lost.
    // Opened beneath the grants as the file natives open (`confine`).
    let mut opts = cap_std::fs::OpenOptions::new();
    opts.read(read).write(write && !append).append(append);
    let what = format!("opening {path} again");
    let mut f =
        with_path(perms, path, &needs, &what, |place| place.open(&opts)).map_err(|e| e.msg.to_string())?;
    let len = f.metadata().map_err(|e| format!("{path}: {e}"))?.len();
    if pos > len {
        return Err(format!("{path} is now {len} bytes, shorter than the position {pos} it was read to"));
    }
    if !append {
        f.seek(SeekFrom::Start(pos)).map_err(|e| format!("seeking {path} to {pos}: {e}"))?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Permissions;
    use crate::natives::Ctx;
    use crate::resource::{Quiet, resource_of};
    use std::io::{Read, Write};
    use vm_core::Atom;

    fn io(perms: Permissions) -> Arc<Io> {
        Io::new(perms, Arc::new(Quiet))
    }

    fn recipe_of(v: &Value) -> Recipe {
        let Value::Res(h) = v else { panic!("a resource") };
        resource_of(h).unwrap().recipe()
    }

    fn use_err(io: &Arc<Io>, v: &Value) -> vm_core::Exception {
        Ctx::new(io, 7).obj("t", v).err().expect("unusable")
    }

    #[tokio::test]
    async fn a_listener_binds_its_port_again_and_accepts() {
        let first = io(Permissions::all());
        let l = listen("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let written = bound_address("127.0.0.1:0", l.local_addr().ok());
        assert_eq!(written, format!("127.0.0.1:{port}"));
        let v = first.adopt_as(
            7,
            Obj::Listener(Listener::new(l)),
            written.clone(),
            Reopen::Listener(written.clone()),
        );
        let recipe = recipe_of(&v);
        assert_eq!(recipe, Recipe::Listener { addr: written.clone() });
        drop(v);
        // A new process: same id, same owner, the port bound again.
        let second = io(Permissions::all());
        let v = second.reopen(3, 7, "tcp listener", &recipe).await;
        let Value::Res(h) = &v else { panic!() };
        assert_eq!(h.id(), 3);
        let obj = Ctx::new(&second, 7).obj("t", &v).unwrap();
        let Obj::Listener(l) = &*obj else { panic!("a listener") };
        let client = std::thread::spawn(move || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        let (_conn, _) = l.inner.accept().await.unwrap();
        client.join().unwrap();
        assert_eq!(second.live(), 1);
    }

    #[tokio::test]
    async fn what_cannot_be_opened_again_is_lost_and_says_why() {
        // Grants are the resumed VM's: none here.
        let denied = io(Permissions::default());
        let v = denied
            .reopen(4, 7, "tcp listener 127.0.0.1:1", &Recipe::Listener { addr: "127.0.0.1:1".into() })
            .await;
        let e = use_err(&denied, &v);
        assert_eq!(e.kind, Atom::new("lost"));
        assert!(e.msg.to_string().contains("--allow-net"), "{e}");
        // A connection never survives.
        let v = denied.reopen(5, 7, "tcp connection 127.0.0.1:9", &Recipe::Lost).await;
        let e = use_err(&denied, &v);
        assert_eq!(
            e.to_string(),
            "lost: t: #res<5> (tcp connection 127.0.0.1:9) was lost: a connection does not survive a restart"
        );
        assert_eq!(recipe_of(&v), Recipe::Lost);
        // A closed one stays closed.
        let v = denied.reopen(6, 7, "file x", &Recipe::Closed).await;
        assert_eq!(use_err(&denied, &v).kind, Atom::new("closed"));
        assert_eq!(recipe_of(&v), Recipe::Closed);
        assert_eq!(denied.live(), 0);
    }

    #[tokio::test]
    async fn a_file_opens_again_at_its_position_without_being_created_or_truncated() {
        let dir = std::env::temp_dir().join(format!("vm-io-reopen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.txt");
        std::fs::write(&path, b"hello, world").unwrap();
        let p = path.to_str().unwrap().to_string();
        let all = io(Permissions::all());
        let mut f = std::fs::File::open(&path).unwrap();
        let mut five = [0; 5];
        f.read_exact(&mut five).unwrap();
        let reopen = Reopen::File { path: p.clone(), read: true, write: false, append: false };
        let v = all.adopt_as(7, Obj::File(Mutex::new(f)), p.clone(), reopen);
        let recipe = recipe_of(&v);
        assert_eq!(
            recipe,
            Recipe::File { path: p.clone(), read: true, write: false, append: false, pos: 5, len: 12 }
        );
        drop(v);
        let again = io(Permissions::all());
        let v = again.reopen(9, 7, "file", &recipe).await;
        let obj = Ctx::new(&again, 7).obj("t", &v).unwrap();
        let Obj::File(f) = &*obj else { panic!("a file") };
        let mut rest = String::new();
        f.lock().unwrap().read_to_string(&mut rest).unwrap();
        assert_eq!(rest, ", world");
        // An appending file goes on appending, and nothing was truncated.
        let append =
            Recipe::File { path: p.clone(), read: false, write: false, append: true, pos: 12, len: 12 };
        let v = again.reopen(10, 7, "file", &append).await;
        let obj = Ctx::new(&again, 7).obj("t", &v).unwrap();
        let Obj::File(f) = &*obj else { panic!("a file") };
        f.lock().unwrap().write_all(b"!").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello, world!");
        // Gone, or shorter than where it was read to: lost, never created.
        std::fs::write(&path, b"hi").unwrap();
        let v = again.reopen(11, 7, "file", &recipe).await;
        assert!(use_err(&again, &v).msg.to_string().contains("is now 2 bytes, shorter than the position 5"));
        std::fs::remove_file(&path).unwrap();
        let v = again.reopen(12, 7, "file", &recipe).await;
        assert!(use_err(&again, &v).msg.to_string().contains("opening"), "{}", use_err(&again, &v));
        assert!(!path.exists(), "reopening never creates the file");
        // Read grants are the resumed VM's.
        let none = io(Permissions::default());
        let v = none.reopen(13, 7, "file", &recipe).await;
        assert!(use_err(&none, &v).msg.to_string().contains("--allow-read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

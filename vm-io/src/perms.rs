//! Permissions: network and file access are denied unless granted on the command line, as deno
//! does (`--allow-net[=HOST[:PORT],...]`, `--allow-read[=PATH,...]`, `--allow-write[=PATH,...]`).
//!
//! Rules:
//! - Network: an entry `host` allows every port of that host, `host:port` only that port; hosts
//!   compare case-insensitively *as the program wrote them* (no resolution: `localhost` and
//!   `127.0.0.1` are different entries, as in deno). `[::1]:80` is the IPv6 form.
//! - Files: a path is allowed when, made absolute against the current directory and normalised
//!   lexically (`.` and `..` removed), it is a granted path or lies under one. Symbolic links are
//!   not followed, so a link inside a granted directory that points outside it is allowed; the
//!   grant is about names, as deno's is.
//! - A denial is an exception of kind `:permission` whose message names the flag that grants it.

use std::path::{Path, PathBuf};
use vm_core::{Atom, Exception};

/// What one kind of access is granted for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Grant<T> {
    /// Nothing (the default).
    #[default]
    Denied,
    /// Everything.
    All,
    /// Only these.
    Only(Vec<T>),
}

/// A network grant: a host, and optionally one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// Lower-cased host as written (brackets of IPv6 literals removed).
    pub host: String,
    /// `None` allows every port.
    pub port: Option<u16>,
}

/// The permissions of one VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// `--allow-net`.
    pub net: Grant<NetRule>,
    /// `--allow-read`.
    pub read: Grant<PathBuf>,
    /// `--allow-write`.
    pub write: Grant<PathBuf>,
}

/// The kind of every denial.
pub fn permission_atom() -> Atom {
    Atom::new("permission")
}

impl Permissions {
    /// Everything allowed (tests and embedders that trust the program).
    pub fn all() -> Permissions {
        Permissions { net: Grant::All, read: Grant::All, write: Grant::All }
    }

    /// Parses a flag's value: `None` is the bare flag (everything); `Some("a,b")` a list.
    pub fn parse_net(value: Option<&str>) -> Result<Grant<NetRule>, String> {
        let Some(list) = value else { return Ok(Grant::All) };
        let mut rules = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, port) =
                split_host_port(item).ok_or_else(|| format!("bad --allow-net entry {item:?}"))?;
            let port = match port {
                Some(p) => {
                    Some(p.parse::<u16>().map_err(|_| format!("bad port in --allow-net entry {item:?}"))?)
                }
                None => None,
            };
            rules.push(NetRule { host: host.to_ascii_lowercase(), port });
        }
        if rules.is_empty() {
            return Err("--allow-net= needs at least one HOST[:PORT]".into());
        }
        Ok(Grant::Only(rules))
    }

    /// Parses `--allow-read` / `--allow-write` values (see [`Permissions::parse_net`]).
    pub fn parse_paths(value: Option<&str>) -> Grant<PathBuf> {
        match value {
            None => Grant::All,
            Some(list) => {
                Grant::Only(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(absolute).collect())
            }
        }
    }

    /// Checks that the program may listen on, connect or send to `addr` (`host:port`).
    pub fn check_net(&self, addr: &str) -> Result<(), Exception> {
        let allowed = match &self.net {
            Grant::All => true,
            Grant::Denied => false,
            Grant::Only(rules) => match split_host_port(addr) {
                Some((host, port)) => {
                    let port = port.and_then(|p| p.parse::<u16>().ok());
                    rules
                        .iter()
                        .any(|r| r.host.eq_ignore_ascii_case(host) && (r.port.is_none() || r.port == port))
                }
                None => false,
            },
        };
        if allowed {
            Ok(())
        } else {
            Err(Exception::new(
                permission_atom(),
                format!("network access to {addr} denied: run with --allow-net or --allow-net={addr}"),
            ))
        }
    }

    /// Checks that the program may read `path` (a file or a directory to list).
    pub fn check_read(&self, path: &str) -> Result<(), Exception> {
        check_path(&self.read, path, "read", "--allow-read")
    }

    /// Checks that the program may create, write or remove `path`.
    pub fn check_write(&self, path: &str) -> Result<(), Exception> {
        check_path(&self.write, path, "write", "--allow-write")
    }
}

fn check_path(grant: &Grant<PathBuf>, path: &str, what: &str, flag: &str) -> Result<(), Exception> {
    let allowed = match grant {
        Grant::All => true,
        Grant::Denied => false,
        Grant::Only(dirs) => {
            let p = absolute(path);
            dirs.iter().any(|d| p.starts_with(d))
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(Exception::new(
            permission_atom(),
            format!("{what} access to {path} denied: run with {flag} or {flag}={path}"),
        ))
    }
}

/// `path` made absolute against the current directory and normalised lexically.
fn absolute(path: &str) -> PathBuf {
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(p)
    };
    crate::normalize(&joined)
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]` into host and optional port text.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address without brackets has several colons: treat it as a host.
        Some((host, _)) if host.contains(':') => Some((s, None)),
        Some((host, port)) if !host.is_empty() => Some((host, Some(port))),
        Some(_) => None,
        None if !s.is_empty() => Some((s, None)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_by_default_and_the_message_names_the_flag() {
        let p = Permissions::default();
        let e = p.check_net("127.0.0.1:7000").unwrap_err();
        assert_eq!(e.kind, permission_atom());
        assert!(e.msg.to_string().contains("--allow-net=127.0.0.1:7000"), "{}", e.msg);
        let e = p.check_read("/etc/passwd").unwrap_err();
        assert!(e.msg.to_string().contains("--allow-read"), "{}", e.msg);
        assert!(p.check_write("x").unwrap_err().msg.to_string().contains("--allow-write"));
    }

    #[test]
    fn net_rules_match_host_and_port() {
        let p = Permissions {
            net: Permissions::parse_net(Some("127.0.0.1:80,Example.com,[::1]:9")).unwrap(),
            ..Default::default()
        };
        assert!(p.check_net("127.0.0.1:80").is_ok());
        assert!(p.check_net("127.0.0.1:81").is_err());
        assert!(p.check_net("example.com:443").is_ok());
        assert!(p.check_net("EXAMPLE.COM:1").is_ok());
        assert!(p.check_net("[::1]:9").is_ok());
        assert!(p.check_net("[::1]:10").is_err());
        assert!(p.check_net("localhost:80").is_err());
        assert!(Permissions::parse_net(Some("h:notaport")).is_err());
        assert!(Permissions::parse_net(Some("")).is_err());
        assert_eq!(Permissions::parse_net(None).unwrap(), Grant::All);
    }

    #[test]
    fn path_rules_are_prefixes_after_normalisation() {
        let p = Permissions { read: Permissions::parse_paths(Some("/tmp/data")), ..Default::default() };
        assert!(p.check_read("/tmp/data").is_ok());
        assert!(p.check_read("/tmp/data/x/y.txt").is_ok());
        assert!(p.check_read("/tmp/data/../secret").is_err());
        assert!(p.check_read("/tmp/database").is_err());
        assert!(p.check_write("/tmp/data/x").is_err());
        let all = Permissions::all();
        assert!(all.check_write("anything").is_ok());
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("a:1"), Some(("a", Some("1"))));
        assert_eq!(split_host_port("[::1]:1"), Some(("::1", Some("1"))));
        assert_eq!(split_host_port("::1"), Some(("::1", None)));
        assert_eq!(split_host_port("host"), Some(("host", None)));
        assert_eq!(split_host_port(":1"), None);
    }
}

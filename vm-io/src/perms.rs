//! Permissions: network, file and environment access are denied unless granted on the command
//! line, as deno does (`--allow-net[=HOST[:PORT],...]`, `--allow-read[=PATH,...]`,
//! `--allow-write[=PATH,...]`, `--allow-env[=NAME,...]`). `docs/io.md` lists which native needs
//! which flag.
//!
//! Rules:
//! 1. Network: an entry `host` allows every port of that host, `host:port` only that port; hosts
//!    compare case-insensitively *as the program wrote them* (no resolution: `localhost` and
//!    `127.0.0.1` are different entries, as in deno). `[::1]:80` is the IPv6 form. An entry must
//!    be an IP address or a DNS name (letters, digits, `-`, `_`, dot-separated), with a port
//!    from 0 to 65535 if any; anything else (`:::`, `a b`) is refused when the flag is parsed.
//!    A connection or datagram to a host *name* goes only to resolved addresses the grant
//!    reaches ([`Pins::reached`]), so a granted name cannot be pointed elsewhere by its name
//!    server (DNS rebinding): with the bare flag, every address; otherwise an address an IP
//!    entry grants (its port matching), or, when the name itself is granted, one of the
//!    addresses the name resolved to the first time this VM connected or sent to it (the grant
//!    is *pinned* to that answer, as if the name's entry had listed those addresses). The
//!    socket then uses the address that was checked: the name is not resolved a second time.
//!    An answer with no reached address is a denial.
//! 2. Name resolution (`resolve`) is network access: it needs `--allow-net`, or an entry naming
//!    that host (any port), since a query to a name server carries data out of the process.
//! 3. Files: a path is allowed when, made absolute against the current directory and normalised
//!    lexically (`.` and `..` removed), it is a granted path or lies under one, *and* where its
//!    symbolic links lead lies under one too. The second half is kept by opening beneath the
//!    granted directory (`confine`'s protocol), never by a check followed by an open.
//! 4. Environment: `--allow-env` allows every variable, `--allow-env=NAME,...` those names.
//! 5. A denial is an exception of kind `:permission` whose message names the flag that grants it.
//! 6. An empty list (`--allow-read=`) is refused when parsed: it would grant nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    /// `--allow-env`.
    pub env: Grant<String>,
}

/// What one group of actors (a container) may do: its permissions and the environment
/// variables its manifest gives it. Natives get the calling actor's through [`crate::natives::Ctx`],
/// so two containers in one VM can hold different grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Network, file and environment access.
    pub perms: Permissions,
    /// Variables `env_get` answers without `--allow-env` (the container's own environment);
    /// any other name still needs the grant and is read from the process.
    pub env: Vec<(String, String)>,
}

impl Grants {
    /// Grants of these permissions, with no environment of their own.
    pub fn of(perms: Permissions) -> Grants {
        Grants { perms, env: Vec::new() }
    }
}

/// The kind of every denial.
pub fn permission_atom() -> Atom {
    Atom::new("permission")
}

impl Permissions {
    /// Everything allowed (tests and embedders that trust the program).
    pub fn all() -> Permissions {
        Permissions { net: Grant::All, read: Grant::All, write: Grant::All, env: Grant::All }
    }

    /// Parses a flag's value: `None` is the bare flag (everything); `Some("a,b")` a list.
    pub fn parse_net(value: Option<&str>) -> Result<Grant<NetRule>, String> {
        parse_list(value, "--allow-net", "HOST[:PORT]", |item| {
            let (host, port) =
                split_host_port(item).ok_or_else(|| format!("bad --allow-net entry {item:?}"))?;
            let bracketed = item.starts_with('[');
            if !valid_host(host) || (bracketed && host.parse::<std::net::Ipv6Addr>().is_err()) {
                return Err(format!(
                    "bad --allow-net entry {item:?}: {host:?} is neither an IP address nor a host name \
                     (write HOST, HOST:PORT or [IPV6]:PORT)"
                ));
            }
            let port = match port {
                Some(p) => {
                    Some(p.parse::<u16>().map_err(|_| format!("bad port in --allow-net entry {item:?}"))?)
                }
                None => None,
            };
            Ok(NetRule { host: host.to_ascii_lowercase(), port })
        })
    }

    /// Parses `--allow-read` / `--allow-write` values (see [`Permissions::parse_net`]).
    pub fn parse_paths(value: Option<&str>, flag: &str) -> Result<Grant<PathBuf>, String> {
        parse_list(value, flag, "PATH", |item| Ok(absolute(item)))
    }

    /// Parses `--allow-env` values (see [`Permissions::parse_net`]).
    pub fn parse_env(value: Option<&str>) -> Result<Grant<String>, String> {
        parse_list(value, "--allow-env", "NAME", |item| match valid_env_name(item) {
            true => Ok(item.to_string()),
            false => Err(format!("bad --allow-env entry {item:?}: not a variable name")),
        })
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
        if allowed { Ok(()) } else { Err(denial("network", addr, "--allow-net")) }
    }

    /// Checks that the program may resolve `host` (rule 2).
    pub fn check_resolve(&self, host: &str) -> Result<(), Exception> {
        let allowed = match &self.net {
            Grant::All => true,
            Grant::Denied => false,
            Grant::Only(rules) => rules.iter().any(|r| r.host.eq_ignore_ascii_case(host)),
        };
        if allowed {
            Ok(())
        } else {
            Err(Exception::new(
                permission_atom(),
                format!("resolving {host} denied: run with --allow-net or --allow-net={host}"),
            ))
        }
    }

    /// Checks that the program may read the environment variable `name`.
    pub fn check_env(&self, name: &str) -> Result<(), Exception> {
        let allowed = match &self.env {
            Grant::All => true,
            Grant::Denied => false,
            Grant::Only(names) => names.iter().any(|n| n == name),
        };
        if allowed { Ok(()) } else { Err(denial("environment", name, "--allow-env")) }
    }
}

/// Rule 1's pinned answers: for each granted host name a connection or datagram has gone to,
/// the addresses it resolved to the first time (one table per VM, in its `Io`).
#[derive(Debug, Default)]
pub struct Pins {
    /// Lower-cased host name -> the addresses of its first answer.
    first: Mutex<HashMap<String, Arc<[IpAddr]>>>,
}

impl Pins {
    /// Rule 1 for a target written as `host:port` that resolved to `resolved` (in the resolver's
    /// order): the addresses the grant reaches, in that order, or the `:permission` denial if
    /// none is. The caller has checked `host:port` with [`Permissions::check_net`] first.
    pub fn reached(
        &self,
        perms: &Permissions,
        host: &str,
        port: u16,
        resolved: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Exception> {
        let rules = match &perms.net {
            Grant::All => return Ok(resolved),
            Grant::Denied => return Err(denial("network", &format!("{host}:{port}"), "--allow-net")),
            Grant::Only(rules) => rules,
        };
        let port_ok = |r: &NetRule| r.port.is_none_or(|p| p == port);
        let name_granted = rules.iter().any(|r| r.host.eq_ignore_ascii_case(host) && port_ok(r));
        let pinned: Arc<[IpAddr]> = if name_granted {
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            let ips: Arc<[IpAddr]> = resolved.iter().map(SocketAddr::ip).collect();
            first.entry(host.to_ascii_lowercase()).or_insert(ips).clone()
        } else {
            Arc::from([])
        };
        let ip_granted = |ip: IpAddr| {
            rules.iter().any(|r| port_ok(r) && r.host.parse::<IpAddr>().is_ok_and(|granted| granted == ip))
        };
        let (reached, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            resolved.into_iter().partition(|a| pinned.contains(&a.ip()) || ip_granted(a.ip()));
        if !reached.is_empty() {
            return Ok(reached);
        }
        let list = |ips: &mut dyn Iterator<Item = IpAddr>| {
            ips.map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ")
        };
        let answer = list(&mut refused.iter().map(SocketAddr::ip));
        let target = refused.first().map_or_else(|| format!("{host}:{port}"), SocketAddr::to_string);
        let why = match pinned.is_empty() {
            true => "which no --allow-net entry grants".to_string(),
            false => format!(
                "not to what it first resolved to ({}), which the grant is pinned to",
                list(&mut pinned.iter().copied())
            ),
        };
        Err(Exception::new(
            permission_atom(),
            format!(
                "network access to {host}:{port} denied: it resolved to {answer}, {why}; run with \
                 --allow-net or --allow-net={target}"
            ),
        ))
    }
}

/// Parses a comma-separated grant list with `item` (rule 6: an empty one is an error).
fn parse_list<T>(
    value: Option<&str>,
    flag: &str,
    form: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Grant<T>, String> {
    let Some(list) = value else { return Ok(Grant::All) };
    let items =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(item).collect::<Result<Vec<_>, _>>()?;
    if items.is_empty() {
        return Err(format!("{flag}= needs at least one {form} (or no `=` at all, to allow everything)"));
    }
    Ok(Grant::Only(items))
}

/// Rule 1: an IP address, or a DNS name of dot-separated labels of letters, digits, `-` and
/// `_` (a trailing dot allowed), at most 253 characters.
fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A name `env_get` accepts: not empty, no `=` and no NUL.
pub(crate) fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// The `:permission` exception for `what` access to `target`, naming `flag`.
pub(crate) fn denial(what: &str, target: &str, flag: &str) -> Exception {
    Exception::new(
        permission_atom(),
        format!("{what} access to {target} denied: run with {flag} or {flag}={target}"),
    )
}

/// `path` made absolute against the current directory and normalised lexically.
pub(crate) fn absolute(path: &str) -> PathBuf {
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
        let e = p.check_resolve("example.com").unwrap_err();
        assert!(e.msg.to_string().contains("--allow-net=example.com"), "{}", e.msg);
        let e = p.check_env("HOME").unwrap_err();
        assert!(e.msg.to_string().contains("run with --allow-env or --allow-env=HOME"), "{}", e.msg);
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
        // Resolving needs an entry for the host, whatever its port.
        assert!(p.check_resolve("example.com").is_ok() && p.check_resolve("127.0.0.1").is_ok());
        assert!(p.check_resolve("localhost").is_err());
        assert!(Permissions::all().check_resolve("localhost").is_ok());
        assert_eq!(Permissions::parse_net(None).unwrap(), Grant::All);
    }

    /// Rule 1's pinning: a granted name reaches what it first resolved to, and a later answer
    /// pointing elsewhere (DNS rebinding) is refused; IP entries reach their address by any name.
    #[test]
    fn a_granted_name_is_pinned_to_its_first_answer() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let p = Permissions {
            net: Permissions::parse_net(Some("rebind.test:80,10.9.9.9:80,other.test")).unwrap(),
            ..Default::default()
        };
        let pins = Pins::default();
        let first = vec![a("192.0.2.1:80"), a("192.0.2.2:80")];
        assert_eq!(pins.reached(&p, "rebind.test", 80, first.clone()).unwrap(), first);
        assert_eq!(
            pins.reached(&p, "REBIND.test", 80, vec![a("192.0.2.2:80")]).unwrap(),
            [a("192.0.2.2:80")]
        );
        // The name server now points the name inside the network: refused, naming both answers.
        let e = pins.reached(&p, "rebind.test", 80, vec![a("127.0.0.1:80"), a("10.0.0.1:80")]).unwrap_err();
        assert_eq!(e.kind, permission_atom());
        assert_eq!(
            e.msg.to_string(),
            "network access to rebind.test:80 denied: it resolved to 127.0.0.1, 10.0.0.1, not to what it \
             first resolved to (192.0.2.1, 192.0.2.2), which the grant is pinned to; run with --allow-net \
             or --allow-net=127.0.0.1:80"
        );
        // A mixed answer keeps only what is reached, in the resolver's order; an address an IP
        // entry grants (with its port) is reached whatever name led to it.
        let mixed = vec![a("10.0.0.1:80"), a("10.9.9.9:80"), a("192.0.2.1:80")];
        assert_eq!(
            pins.reached(&p, "rebind.test", 80, mixed).unwrap(),
            [a("10.9.9.9:80"), a("192.0.2.1:80")]
        );
        // Each name has its own pin, taken on its first use.
        assert_eq!(pins.reached(&p, "other.test", 1, vec![a("10.0.0.1:1")]).unwrap(), [a("10.0.0.1:1")]);
        assert!(pins.reached(&p, "other.test", 2, vec![a("10.0.0.2:2")]).is_err());
        // The bare flag reaches everything, and pins nothing.
        let all = Permissions::all();
        assert_eq!(
            pins.reached(&all, "rebind.test", 80, vec![a("10.0.0.1:80")]).unwrap(),
            [a("10.0.0.1:80")]
        );
    }

    #[test]
    fn malformed_net_entries_are_refused() {
        for bad in
            ["", ",", ":::", "h:notaport", "h:", "h:65536", ":80", "a b", "[x]:1", "[::1", "-a.com", "a..b"]
        {
            assert!(Permissions::parse_net(Some(bad)).is_err(), "{bad:?} was accepted");
        }
        let e = Permissions::parse_net(Some(":::")).unwrap_err();
        assert!(e.contains("neither an IP address nor a host name"), "{e}");
        for good in ["localhost", "::1", "[::1]:0", "10.0.0.1:65535", "my_host.example.", "a-b.c"] {
            assert!(Permissions::parse_net(Some(good)).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn lists_parse_and_an_empty_list_is_refused() {
        assert_eq!(
            Permissions::parse_paths(Some("/tmp/data/./x/..,"), "--allow-read").unwrap(),
            Grant::Only(vec![PathBuf::from("/tmp/data")])
        );
        let e = Permissions::parse_paths(Some(""), "--allow-read").unwrap_err();
        assert!(e.starts_with("--allow-read= needs at least one PATH"), "{e}");
        assert_eq!(Permissions::parse_paths(None, "--allow-write").unwrap(), Grant::All);
        let p = Permissions { env: Permissions::parse_env(Some("HOME,PATH")).unwrap(), ..Default::default() };
        assert!(p.check_env("HOME").is_ok() && p.check_env("home").is_err() && p.check_env("USER").is_err());
        assert!(Permissions::parse_env(Some("A=B")).is_err());
        assert!(Permissions::all().check_env("ANYTHING").is_ok());
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

//! How much memory the process may use, as the system says: the default of the VM-wide
//! budget (`vm run --max-memory`). Read from Linux's files, so nothing here needs `unsafe`:
//! 1. the cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`), less what the cgroup
//!    already uses;
//! 2. the address-space limit (`RLIMIT_AS`, from `/proc/self/limits`), less the address space
//!    the process has mapped already (`VmSize`), halved: allocators reserve address space well
//!    ahead of what they hand out;
//! 3. the machine's physical memory (`MemTotal`).
//!
//! [`default_budget`] is three quarters of the smallest of these, so that the VM ends an actor
//! well before the system refuses an allocation (which aborts the process).

use std::path::Path;

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A number of bytes from a line such as `MemTotal:  16316412 kB` (the unit after the number).
fn kb_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let n: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(n.saturating_mul(1024))
}

/// The cgroup's memory limit less its current use, if the process is in a limited cgroup.
fn cgroup_room() -> Option<u64> {
    let cg = read("/proc/self/cgroup")?;
    // cgroup v2: one line `0::/path`.
    if let Some(path) = cg.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        if let Some(max) = read(dir.join("memory.max")).and_then(|s| s.trim().parse::<u64>().ok()) {
            let used =
                read(dir.join("memory.current")).and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
            return Some(max.saturating_sub(used));
        }
    }
    // cgroup v1: a limit of (nearly) 2^63 means none.
    let max = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")?.trim().parse::<u64>().ok()?;
    (max < 1 << 62).then(|| {
        let used = read("/sys/fs/cgroup/memory/memory.usage_in_bytes")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        max.saturating_sub(used)
    })
}

/// The address space the process may still map, halved (point 2), if it is limited.
fn address_space_room() -> Option<u64> {
    let limits = read("/proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
    let soft: u64 = line["Max address space".len()..].split_whitespace().next()?.parse().ok()?;
    let mapped = read("/proc/self/status").and_then(|s| kb_field(&s, "VmSize:")).unwrap_or(0);
    Some(soft.saturating_sub(mapped) / 2)
}

/// The machine's physical memory.
fn physical() -> Option<u64> {
    kb_field(&read("/proc/meminfo")?, "MemTotal:")
}

/// The default VM-wide memory budget (see the module docs), or `None` if the system says
/// nothing.
pub fn default_budget() -> Option<u64> {
    [cgroup_room(), address_space_room(), physical()].into_iter().flatten().min().map(|m| m / 4 * 3)
}

/// Parses a size such as `512m`, `2g`, `64k` or `1000000` (bytes; the suffixes are powers of
/// 1024, and may be written in capitals or with a trailing `b`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size such as 512m, 2g or 1000000"))?;
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use k, m, g or t)")),
    };
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the size must be more than 0".into()),
        Some(n) => Ok(n),
        None => Err(format!("{text:?} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12q").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999t").unwrap_err().contains("too large"));
    }

    #[test]
    fn the_default_budget_is_below_the_machines_memory() {
        let b = default_budget().expect("Linux says how much memory there is");
        assert!(b <= physical().unwrap());
        assert!(b > 0);
    }
}

//! What the stream benchmarks read from /proc: a process's resident memory
//! and CPU time, and the kernel's TCP socket memory and slab size.
//!
//! Every reader returns `None` when the file or field is missing (another
//! kernel, a process that exited); the caller reports that as "n/a" rather
//! than a made-up number.

use std::fs;

/// Resident set size of `pid`, bytes (VmRSS of /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, "VmRSS:").map(|kib| kib * 1024)
}

/// User + system CPU time of `pid` (all its threads), clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU time of this process, clock ticks.
pub fn own_cpu_ticks() -> Option<u64> {
    stat_ticks(&fs::read_to_string("/proc/self/stat").ok()?)
}

fn stat_ticks(text: &str) -> Option<u64> {
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (for [`cpu_ticks`]).
pub fn ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Bytes per memory page (sockstat's `mem` counts pages).
pub fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as u64
    } else {
        4096
    }
}

/// TCP sockets in use and their buffer memory in pages, from the `TCP:`
/// line of /proc/net/sockstat (whole machine, both ends of a loopback
/// connection).
pub fn tcp_sockstat() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| {
        f.iter()
            .position(|w| *w == name)
            .and_then(|i| f.get(i + 1)?.parse().ok())
    };
    Some((value("inuse")?, value("mem")?))
}

/// Kernel slab memory of the whole machine, bytes (Slab of /proc/meminfo).
pub fn slab_bytes() -> Option<u64> {
    kib_field(&fs::read_to_string("/proc/meminfo").ok()?, "Slab:").map(|kib| kib * 1024)
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skips_a_command_with_spaces() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0";
        assert_eq!(stat_ticks(stat), Some(333));
    }

    #[test]
    fn kib_field_reads_the_number() {
        assert_eq!(kib_field("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
        assert_eq!(kib_field("Name:\tx\n", "VmRSS:"), None);
    }
}

//! Process limits and memory readings from /proc.

/// Raise the soft open-file limit to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let (_soft, hard) = rlimit::Resource::NOFILE.get()?;
    rlimit::Resource::NOFILE.set(hard, hard)?;
    Ok(hard)
}

/// Resident memory of process `pid` in KiB (VmRSS), if it can be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    4321 kB\nThreads:\t1\n";
        assert_eq!(super::parse_vm_rss(status), Some(4321));
        assert_eq!(super::parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(super::rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}

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

/// Peak resident memory of process `pid` in KiB (VmHWM), if it can be read.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmHWM:")
}

/// Milliseconds of CPU (user + system) process `pid` has used.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat_cpu(&stat)
}

/// Milliseconds of CPU the whole machine has spent busy (all cores; user,
/// nice, system, irq, softirq and steal time).
pub fn machine_busy_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(&stat)
}

/// Kernel clock ticks per second for /proc times (USER_HZ: 100 on every
/// architecture Linux exposes to user space here).
const TICKS_PER_S: f64 = 100.0;

fn parse_proc_stat_cpu(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the full line, utime 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / TICKS_PER_S)
}

fn parse_machine_busy(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some(busy * 1000.0 / TICKS_PER_S)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmRSS:")
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    4321 kB\nThreads:\t1\n";
        assert_eq!(super::parse_vm_rss(status), Some(4321));
        assert_eq!(super::parse_vm_rss("Name: x\n"), None);
        assert_eq!(super::parse_status_kib(status, "VmPeak:"), Some(100));
    }

    #[test]
    fn parses_cpu_times() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 9 0 0";
        assert_eq!(super::parse_proc_stat_cpu(stat), Some(3000.0));
        let machine = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(super::parse_machine_busy(machine), Some(1610.0));
        assert!(super::cpu_ms(std::process::id()).is_some());
        assert!(super::machine_busy_ms().is_some());
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(super::rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}

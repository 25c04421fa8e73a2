//! The standard `process_*` metrics (issue 17 item 4), named as every
//! Prometheus client library names them so existing dashboards and alerts
//! work: CPU time, resident and virtual memory, open and allowed file
//! descriptors, threads and start time, read from `/proc/self` at scrape
//! time. Off Linux there is no `/proc` and no process metrics.

use std::fs;

/// One reading of the process's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessNumbers {
    /// User and system CPU time, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub(crate) resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub(crate) virtual_bytes: u64,
    /// Open file descriptors.
    pub(crate) open_fds: u64,
    /// The soft limit of open file descriptors; `None` when unlimited.
    pub(crate) max_fds: Option<u64>,
    /// Threads of the process.
    pub(crate) threads: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: f64,
}

/// The process's numbers now, or `None` where `/proc` cannot say.
pub(crate) fn read() -> Option<ProcessNumbers> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = boot_time_seconds(&fs::read_to_string("/proc/stat").ok()?)?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|ticks| *ticks > 0)?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|page| *page > 0)?;
    let open_fds = fs::read_dir("/proc/self/fd").ok()?.count();
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
        .filter(|soft| *soft != nix::sys::resource::RLIM_INFINITY);
    from_stat(&stat, ticks as f64, page as u64, boot_time).map(|numbers| ProcessNumbers {
        // `read_dir` itself holds one descriptor open while it counts.
        open_fds: open_fds.saturating_sub(1) as u64,
        max_fds,
        ..numbers
    })
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn boot_time_seconds(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|seconds| seconds.trim().parse().ok())
}

/// The numbers in `/proc/self/stat` (proc(5)); descriptors are counted
/// elsewhere.
fn from_stat(
    stat: &str,
    ticks_per_second: f64,
    page_bytes: u64,
    boot: f64,
) -> Option<ProcessNumbers> {
    // The command name, field 2, is in parentheses and may hold spaces or
    // parentheses itself: the fields that follow start after the last `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    Some(ProcessNumbers {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        resident_bytes: field(24)?.saturating_mul(page_bytes),
        virtual_bytes: field(23)?,
        open_fds: 0,
        max_fds: None,
        threads: field(20)?,
        start_time_seconds: boot + field(22)? as f64 / ticks_per_second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_whose_name_has_spaces_and_parentheses_is_read_by_field() {
        // proc(5) fields 1 to 24 of a process named `a) b`.
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 1000 123456789 300";
        let numbers = from_stat(stat, 100.0, 4096, 1_700_000_000.0).expect("parsed");
        assert_eq!(numbers.cpu_seconds, 3.0, "(250 + 50) ticks at 100 Hz");
        assert_eq!(numbers.threads, 7);
        assert_eq!(numbers.start_time_seconds, 1_700_000_010.0);
        assert_eq!(numbers.virtual_bytes, 123_456_789);
        assert_eq!(numbers.resident_bytes, 300 * 4096);
    }

    #[test]
    fn this_process_reads_as_itself() {
        let numbers = read().expect("/proc/self on Linux");
        assert!(numbers.resident_bytes > 1 << 20, "{numbers:?}");
        assert!(numbers.threads >= 1);
        assert!(numbers.open_fds >= 3, "stdin, stdout, stderr: {numbers:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64();
        assert!(
            numbers.start_time_seconds <= now + 1.0 && numbers.start_time_seconds > now - 86_400.0,
            "{numbers:?} at {now}"
        );
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        assert_eq!(boot_time_seconds(proc_stat), Some(1_700_000_000.0));
        assert_eq!(boot_time_seconds("cpu 1\n"), None);
    }
}

//! The machine and versions a run is measured on, and this process's memory from /proc.

use std::path::Path;
use std::process::Command;

use crate::report::Machine;

/// A `/proc/self/status` field in KiB (`VmHWM`: peak resident set; `VmRSS`: resident now).
#[must_use]
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_status_kib(&status, field).unwrap_or(0)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU time (user + system, seconds) of process `pid`, or of this process.
#[must_use]
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    #[allow(clippy::cast_precision_loss)] // ticks far below 2^53
    let ticks = parse_stat_ticks(&stat).unwrap_or(0) as f64;
    ticks / clock_ticks_per_second()
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| first_line_of("getconf", &["CLK_TCK"]).trim().parse().unwrap_or(100.0))
}

fn first_line_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| format!("{program}: unknown"))
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How an idle CPU of this machine waits for work, read under `sys` (`/sys`): the cpuidle
/// driver and governor, and, with the `haltpoll` driver of a KVM guest, how long a CPU polls
/// before it halts (`guest_halt_poll_ns`). A halted virtual CPU is woken through the host, which
/// on some VMs costs an awaited Redis round trip as much as the rest of it: measured here, one
/// client's back-to-back commands ran two to three times as fast with polling on. `unknown` when not exposed.
#[must_use]
pub fn cpu_idle(sys: &Path) -> String {
    let read = |path: &str| {
        std::fs::read_to_string(sys.join(path)).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let Some(driver) = read("devices/system/cpu/cpuidle/current_driver") else {
        return "unknown".to_owned();
    };
    let mut out = driver;
    if let Some(governor) = read("devices/system/cpu/cpuidle/current_governor")
        && governor != out
    {
        out = format!("{out} (governor {governor})");
    }
    if let Some(ns) = read("module/haltpoll/parameters/guest_halt_poll_ns") {
        out = format!("{out}, guest halt polling {ns} ns");
    }
    out
}

/// What this machine is.
#[must_use]
pub fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown")
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let redis = first_line_of("redis-server", &["--version"]);
    let redis_server =
        redis.split_whitespace().find_map(|w| w.strip_prefix("v=")).map_or(redis.clone(), str::to_owned);
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu_model,
        mem_total_mib: parse_status_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        rustc: first_line_of("rustc", &["--version"]),
        redis_server,
        cpu_idle: cpu_idle(Path::new("/sys")),
        load_at_start: load_average(),
        load_at_end: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tlaneway-bench\nVmHWM:\t   12345 kB\nVmRSS:\t    678 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(12_345));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(678));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn cpu_idle_names_the_driver_the_governor_and_the_halt_polling() {
        let sys = std::env::temp_dir().join(format!("laneway-bench-sys-{}", std::process::id()));
        let write = |path: &str, text: &str| {
            let file = sys.join(path);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("a directory");
            std::fs::write(file, text).expect("a file");
        };
        assert_eq!(cpu_idle(&sys), "unknown");
        write("devices/system/cpu/cpuidle/current_driver", "acpi_idle\n");
        write("devices/system/cpu/cpuidle/current_governor", "menu\n");
        assert_eq!(cpu_idle(&sys), "acpi_idle (governor menu)");
        write("devices/system/cpu/cpuidle/current_driver", "haltpoll\n");
        write("devices/system/cpu/cpuidle/current_governor", "haltpoll\n");
        write("module/haltpoll/parameters/guest_halt_poll_ns", "0\n");
        assert_eq!(cpu_idle(&sys), "haltpoll, guest halt polling 0 ns");
        std::fs::remove_dir_all(&sys).expect("cleaned up");
    }

    #[test]
    fn cpu_ticks_are_user_plus_system_even_with_spaces_in_the_name() {
        let stat = "4242 (laneway bench) S 1 4242 4242 0 -1 4194304 126 0 0 0 250 70 0 0 20 0 1";
        assert_eq!(parse_stat_ticks(stat), Some(320));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }
}

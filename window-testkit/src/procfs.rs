//! What Linux tells about a process: memory (`/proc/<pid>/status`) and CPU time
//! (`/proc/<pid>/stat`). Every reader returns `None` where the information is not there (another
//! OS, a process that already exited), so a caller reports "n/a" rather than failing.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

/// Which process to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// The calling process.
    This,
    /// Another process by id (it must not have been reaped yet).
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::This => "/proc/self".to_owned(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// Resident memory now (`VmRSS`), in KiB.
pub fn rss_kib(pid: Pid) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident memory (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: Pid) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: Pid, name: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("{}/status", pid.dir())).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time used so far, in seconds.
pub fn cpu_seconds(pid: Pid) -> Option<f64> {
    let stat = fs::read_to_string(format!("{}/stat", pid.dir())).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

/// `getconf CLK_TCK` (asked once; 100, the Linux default, if that fails).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

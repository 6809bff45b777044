//! The processes a benchmark measures: started on a free port, killed when
//! dropped, their CPU time and memory read from `/proc`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process started by the harness, killed when dropped.
#[derive(Debug)]
pub struct Server {
    /// The process.
    pub child: Child,
    /// Where it listens (`127.0.0.1:port`).
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary beside the running one (the harness's siblings).
pub fn bin(name: &str) -> std::path::PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name(name)
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Starts one of the harness's sibling binaries (the zoo, the limit).
pub async fn start(name: &str, env: &[(&str, String)]) -> crate::Result<Server> {
    start_cmd(name, Command::new(bin(name)), env).await
}

/// Starts `cmd` on a free port (`PORT`) and waits until it accepts.
pub async fn start_cmd(
    name: &str,
    mut cmd: Command,
    env: &[(&str, String)],
) -> crate::Result<Server> {
    let port = free_port();
    cmd.env("PORT", port.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let addr = format!("127.0.0.1:{port}");
    // Sails takes several seconds to lift.
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Ok(Server { child, addr });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{name} did not start"))
}

/// A `redis-server` of the harness's own on a free port (no persistence),
/// killed when dropped; `url` is what `REDIS_URL` takes.
pub async fn redis() -> crate::Result<(Server, String)> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            let url = format!("redis://{addr}/");
            return Ok((Server { child, addr }, url));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("redis-server did not start".into())
}

/// Server CPU time (user + system) in microseconds, from `/proc/<pid>/stat`.
pub fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Linux reports these in clock ticks of 1/100 s (USER_HZ) on every
    // architecture the harness runs on.
    stat_cpu_ticks(&stat).unwrap_or(0) * 10_000
}

/// utime + stime of a `/proc/<pid>/stat` line, read by position. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`: field 3 (state) is the first after it, utime
/// (field 14) the 12th and stime (field 15) the 13th. Fields such as tpgid
/// are `-1` for a process without a terminal, so every field counts,
/// whatever it parses as.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU time so far from the first line of `/proc/stat`, in
/// clock ticks: all of it, and the share stolen by the hypervisor (time
/// this machine's cores were runnable but another guest ran).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    machine_ticks_of(stat.lines().next().unwrap_or_default())
}

/// `(total, steal)` of a `/proc/stat` `cpu` line: user, nice, system, idle,
/// iowait, irq, softirq, steal (guest time is already in user and nice);
/// `(0, 0)` for a line that is not one, rather than figures shifted.
fn machine_ticks_of(line: &str) -> (u64, u64) {
    let ticks: Option<Vec<u64>> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().ok())
        .collect();
    match ticks.as_deref() {
        Some(t @ [.., steal]) if t.len() == 8 => (t.iter().sum(), *steal),
        _ => (0, 0),
    }
}

/// Resident memory of process `pid`, in KiB, from `/proc/<pid>/status`.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{machine_ticks_of, stat_cpu_ticks};

    #[test]
    fn machine_ticks_sum_the_first_eight_fields_and_take_steal_from_the_eighth() {
        let line = "cpu  134122 0 26748 180880 571 0 2878 12225 0 0";
        assert_eq!(
            machine_ticks_of(line),
            (134122 + 26748 + 180880 + 571 + 2878 + 12225, 12225)
        );
        assert_eq!(
            machine_ticks_of("cpu  134122 x 26748 180880 571 0 2878 12225"),
            (0, 0)
        );
        assert_eq!(machine_ticks_of("intr 1 2 3"), (0, 0));
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime_when_tpgid_is_minus_one() {
        // A server started by the harness: no controlling terminal (tty 0,
        // tpgid -1); utime 1234, stime 567, cutime 89, cstime 10.
        let line = "4242 (zoo (main)) S 4200 4242 4200 0 -1 4194560 3311 0 0 0 \
                    1234 567 89 10 20 0 3 0 123456 98765432 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17664 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_cpu_ticks(line), Some(1234 + 567));
    }

    #[test]
    fn cpu_ticks_of_a_truncated_line_are_none() {
        assert_eq!(stat_cpu_ticks("4242 (zoo) S 1 2 3"), None);
        assert_eq!(stat_cpu_ticks(""), None);
    }
}

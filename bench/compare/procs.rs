//! The servers under test as child processes, and what `/proc` says they cost: CPU time
//! (utime + stime) and peak resident memory (VmHWM), summed over a server's process tree so a
//! pre-forking Python server counts every worker.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A child process, killed (with its process group) when dropped.
pub struct Server {
    child: Child,
    /// Kept open so the child keeps writing; read on a thread so it never blocks on a full pipe.
    _drain: std::thread::JoinHandle<()>,
}

impl Server {
    /// Starts `command` in its own process group and waits (up to `wait`) for a stdout line
    /// starting with `ready`; returns the server and the rest of that line.
    pub fn start(
        name: &str,
        mut command: Command,
        ready: &str,
        wait: Duration,
    ) -> anyhow::Result<(Self, String)> {
        use std::os::unix::process::CommandExt;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_string();
        let drain = std::thread::spawn(move || forward(stdout, ready, tx));
        let mut server = Server {
            child,
            _drain: drain,
        };
        match rx.recv_timeout(wait) {
            Ok(rest) => Ok((server, rest)),
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                bail!("{name} did not say it was ready within {wait:?} (exit status: {status:?})")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process and every descendant.
    pub fn pids(&self) -> Vec<u32> {
        descendants(self.pid())
    }

    /// CPU time so far, summed over [`Server::pids`].
    pub fn cpu(&self) -> Duration {
        self.pids().into_iter().filter_map(cpu_time).sum()
    }

    /// Resets the peak-RSS mark of every process (write "5" to `clear_refs`), so the next
    /// [`Server::peak_rss`] covers only what follows. False where the kernel refused.
    pub fn reset_peak_rss(&self) -> bool {
        self.pids()
            .into_iter()
            .all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    }

    /// Peak resident set (VmHWM), summed over [`Server::pids`], in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.pids().into_iter().filter_map(peak_rss).sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole group: a pre-forking server's workers go too.
        let pgid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
    }
}

/// Sends the text after `ready` on the first line that starts with it, then drains stdout to
/// this process's stderr (so a server's own lines stay visible but apart from the table).
fn forward(stdout: ChildStdout, ready: String, tx: std::sync::mpsc::Sender<String>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix(&ready)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(rest.trim().to_string());
            continue;
        }
        eprintln!("    {line}");
    }
}

/// `pid` and all its descendants, from the parent field of every `/proc/<pid>/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(parent) = stat_fields(child).and_then(|f| f.get(1)?.parse().ok()) {
                parents.push((child, parent));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, q)| *q == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name (state first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// User + system CPU time of `pid` so far. utime and stime are stat's fields 14 and 15, in
/// clock ticks of 1/100 s (USER_HZ on every Linux platform).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// VmHWM of `pid`, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The 1-, 5- and 15-minute load averages, as `uptime` prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// The whole machine's CPU time so far (`/proc/stat`'s `cpu` line), to tell what other
/// processes took during a window: the benchmarked processes share the cores with whatever
/// else runs, and a row is only as clean as that share is small.
#[derive(Clone, Copy, Default)]
pub struct Machine {
    /// user + nice + system + irq + softirq, in clock ticks.
    busy: u64,
    /// Time the hypervisor gave to other guests while this one wanted to run.
    steal: u64,
    /// Every field but guest time (already counted in user).
    total: u64,
}

impl Machine {
    pub fn read() -> Self {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return Self::default();
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return Self::default();
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        Self {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            steal: at(7),
            total: (0..8).map(at).sum(),
        }
    }

    /// The difference from `earlier` to `self`.
    pub fn since(&self, earlier: &Machine) -> Machine {
        Machine {
            busy: self.busy.saturating_sub(earlier.busy),
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// The share of the machine's capacity (all cores) other processes used, given what the
    /// measured processes used (`ours`); `None` when the window was too short to tell.
    pub fn others_share(&self, ours: Duration) -> Option<f64> {
        let ours_ticks = ours.as_millis() as f64 / 10.0;
        (self.total > 0).then(|| ((self.busy as f64 - ours_ticks) / self.total as f64).max(0.0))
    }

    /// The share of the machine's capacity the hypervisor gave to other guests.
    pub fn steal_share(&self) -> Option<f64> {
        (self.total > 0).then(|| self.steal as f64 / self.total as f64)
    }
}

//! The HTTP load generator: `wrk` (Debian's package) with `post.lua`, one process per window,
//! so the load costs what a lean C client costs and its CPU is its own process's. It reports
//! its counts, p50/p99 and its own CPU time on one line (`post.lua`'s `done`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// What one wrk window saw.
pub struct WrkRun {
    /// Responses with a status below 400.
    pub ok: u64,
    /// How long wrk measured.
    pub duration: Duration,
    /// Status ≥ 400, socket errors and timeouts.
    pub errors: u64,
    /// The error counts by kind, for the log.
    pub error_detail: String,
    pub p50: Duration,
    pub p99: Duration,
    /// wrk's own CPU time, all its threads.
    pub cpu: Duration,
}

/// One POST target: its URL, the file wrk sends and the headers it sends with it.
#[derive(Clone)]
pub struct WrkTarget {
    pub url: String,
    pub body_file: PathBuf,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
}

/// The script beside this file.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/compare/post.lua")
}

/// Runs `wrk` for `secs` whole seconds (wrk's `-d` takes no fractions) with `connections`
/// kept-alive connections on one thread (a thread drives thousands of connections; more would
/// only take the cores the servers need), each sending a request as soon as its last answer
/// came. Blocking: call it on a blocking thread.
pub fn run(
    wrk: &Path,
    target: &WrkTarget,
    connections: usize,
    secs: u64,
) -> anyhow::Result<WrkRun> {
    let mut command = Command::new(wrk);
    command
        .args(["-t1", "--timeout", "30s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", secs.max(1)))
        .arg("-s")
        .arg(script())
        .arg(&target.url)
        .arg("--")
        .arg(&target.body_file)
        .arg(&target.content_type);
    for (name, value) in &target.headers {
        command.arg(name).arg(value);
    }
    let output = command
        .output()
        .with_context(|| format!("running {} (bench/run installs it)", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("wrk-result "))
        .with_context(|| format!("no wrk-result line in wrk's output: {stdout}"))?;
    parse(line)
}

/// Parses `post.lua`'s `key=value` line.
fn parse(line: &str) -> anyhow::Result<WrkRun> {
    let field = |key: &str| -> anyhow::Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("wrk-result has no {key}: {line}"))?
            .parse()
            .with_context(|| format!("wrk-result {key}: {line}"))
    };
    let kinds = ["connect", "read", "write", "status", "timeout"];
    let mut errors = 0;
    let mut detail = Vec::new();
    for kind in kinds {
        let n = field(kind)?;
        errors += n;
        if n > 0 {
            detail.push(format!("{kind} {n}"));
        }
    }
    // USER_HZ is 100 on every Linux platform.
    let ticks = field("utime_ticks")? + field("stime_ticks")?;
    Ok(WrkRun {
        ok: field("requests")?.saturating_sub(field("status")?),
        duration: Duration::from_micros(field("duration_us")?),
        errors,
        error_detail: detail.join(", "),
        p50: Duration::from_micros(field("p50_us")?),
        p99: Duration::from_micros(field("p99_us")?),
        cpu: Duration::from_millis(ticks * 10),
    })
}

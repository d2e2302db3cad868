//! `--profile perf|callgrind`: the gateway's own CPU under load, for BENCHMARKS.md's "where
//! each microsecond goes". Setup 1 (digits plugins) and setup 4 (REST pass-through) at one
//! concurrency (64 unless `--concurrency`), driven by wrk, on the shared fake:
//!
//! - `perf`: `perf record --call-graph dwarf` on the gateway (started with
//!   `INFERGATE_PERFMAP=1`, so plugin frames have names) for the measured window; wrk's count
//!   and the gateway's CPU time over the same window go beside the profile
//!   (`<setup>.perf.data`, `<setup>.window`), so shares of samples turn into µs per request;
//! - `callgrind`: the gateway under `valgrind --tool=callgrind`, instrumentation switched on
//!   for the window only: instructions per request, counted rather than sampled, the same from
//!   run to run on a busy machine (`callgrind.out.<setup>`, `<setup>.window`). The gateway is
//!   some 50x slower under valgrind, so its batches are fuller than in a normal run.
//!
//! `bench/profile` runs this and renders the reports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::Args;
use crate::load::Target;
use crate::procs::Server;
use crate::servers::{self, Bodies, http_target, root};
use crate::wrk::{self, WrkTarget};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Profiler {
    Perf,
    Callgrind,
}

pub async fn run(args: &Args, profiler: Profiler, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    // Absolute: the gateway runs in its own temporary folder, and the callgrind wrapper and
    // its output file are named from there.
    let out = &std::path::absolute(out)?;
    let plan = args.plan();
    let wrk_bin = plan
        .wrk
        .clone()
        .context("profiles are driven by wrk (drop --load hyper)")?;
    let concurrency = plan.concurrencies.last().copied().unwrap_or(64);
    let (fake, backend) = servers::start_fake(args)?;
    let gateway_bin = servers::gateway_binary(args)?;
    let bodies = Bodies::new()?;
    let png = Bytes::from(std::fs::read(root().join("examples/images/digit-7-0.png"))?);
    // The pass-through is sent the digits plugin's tensor of the same image, as in setup 4.
    let work = crate::setups::PrePost::measure(&png).await?;
    let rest_body = crate::setups::rest_body(&work.image)?;
    for (name, plugins, body, content_type) in [
        ("digits", true, &png, "image/png"),
        ("rest", false, &rest_body, "application/json"),
    ] {
        let dir = servers::gateway_config(&backend, plugins, args.tuning())?;
        let (gateway, base) = start(&gateway_bin, &dir, profiler, out, name)?;
        let target = http_target(
            &format!("{base}/v1/models/digits:predict"),
            body,
            content_type,
            &bodies,
        )?;
        crate::setups::check(&target, "predictions").await?;
        let secs = plan.measure.as_secs().max(1);
        let window = profile_window(
            &wrk_bin,
            &gateway,
            &fake,
            &target,
            concurrency,
            secs,
            profiler,
            &out.join(name),
        )
        .await?;
        std::fs::write(out.join(format!("{name}.window")), window)?;
        drop(gateway);
        eprintln!("  profiled: {name} c={concurrency}");
    }
    Ok(())
}

/// The gateway, with the perf map on, under valgrind for callgrind.
fn start(
    bin: &Path,
    dir: &tempfile::TempDir,
    profiler: Profiler,
    out: &Path,
    name: &str,
) -> anyhow::Result<(Server, String)> {
    let env = [("INFERGATE_PERFMAP", "1")];
    match profiler {
        Profiler::Perf => servers::start_gateway(bin, dir, &env),
        Profiler::Callgrind => {
            let file = out.join(format!("callgrind.out.{name}"));
            let wrapped = valgrind_wrapper(bin, &file)?;
            servers::start_gateway(&wrapped, dir, &env)
        }
    }
}

/// A script that runs the gateway under callgrind with collection off until switched on.
/// (`start_gateway` takes one program; the wrapper keeps it that way.)
fn valgrind_wrapper(bin: &Path, file: &Path) -> anyhow::Result<PathBuf> {
    let script = file.with_extension("sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# --smc-check: plugin code is compiled at run time.\n\
             exec valgrind --tool=callgrind --instr-atstart=no --smc-check=all-non-file \
             --callgrind-out-file={} {} \"$@\"\n",
            file.display(),
            bin.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// Warms up, then profiles the gateway while wrk runs `secs`; the window's numbers as
/// `key=value` lines.
#[allow(clippy::too_many_arguments)]
async fn profile_window(
    wrk_bin: &Path,
    gateway: &Server,
    fake: &Server,
    target: &Target,
    concurrency: usize,
    secs: u64,
    profiler: Profiler,
    stem: &Path,
) -> anyhow::Result<String> {
    let Target::Http {
        uri,
        body_file,
        content_type,
        ..
    } = target
    else {
        bail!("profiles run HTTP targets")
    };
    let wrk_target = WrkTarget {
        url: uri.to_string(),
        body_file: body_file.clone(),
        content_type: content_type.to_string(),
        headers: Vec::new(),
    };
    let load = |secs: u64| {
        let (bin, target) = (wrk_bin.to_path_buf(), wrk_target.clone());
        tokio::task::spawn_blocking(move || wrk::run(&bin, &target, concurrency, secs))
    };
    load(2).await??;
    let pid = gateway.pid().to_string();
    let recorder = match profiler {
        Profiler::Perf => Some(
            Command::new("perf")
                .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
                .arg(stem.with_extension("perf.data"))
                .args(["-p", &pid, "--", "sleep"])
                .arg(secs.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("running perf (apt-get install -y linux-perf)")?,
        ),
        Profiler::Callgrind => {
            callgrind_control(&["-i", "on", &pid])?;
            None
        }
    };
    let (server_before, fake_before) = (gateway.cpu(), fake.cpu());
    let result = load(secs).await??;
    let (server_cpu, fake_cpu) = (
        gateway.cpu().saturating_sub(server_before),
        fake.cpu().saturating_sub(fake_before),
    );
    match recorder {
        Some(mut perf) => {
            let status = perf.wait()?;
            if !status.success() {
                bail!("perf record failed: {status}");
            }
        }
        None => {
            callgrind_control(&["-i", "off", &pid])?;
            callgrind_control(&["-d", &pid])?;
            // The dump is written asynchronously by the valgrind'ed process.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / result.ok.max(1) as f64;
    Ok(format!(
        "requests={}\nerrors={}\nseconds={:.3}\nconcurrency={concurrency}\n\
         server_cpu_us_per_request={:.1}\nbackend_cpu_us_per_request={:.1}\n\
         p50_us={}\np99_us={}\n",
        result.ok,
        result.errors,
        result.duration.as_secs_f64(),
        per_request(server_cpu),
        per_request(fake_cpu),
        result.p50.as_micros(),
        result.p99.as_micros(),
    ))
}

fn callgrind_control(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running callgrind_control (valgrind)")?;
    if !status.success() {
        bail!("callgrind_control {args:?} failed: {status}");
    }
    Ok(())
}

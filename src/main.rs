//! The `infergate` command: `serve` runs the gateway, `check` loads and checks a config and
//! every plugin without serving, and runs each model folder's samples.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use infergate::workers::Workers;
use infergate::{Gateway, GatewayConfig, samples, scaffold};

/// mimalloc, not glibc's malloc: the request path allocates and frees small buffers on
/// every tokio worker, often freeing on one what another allocated; glibc's arenas then
/// contend on a lock and its bins cost more per call (`bench/profile` of the digits
/// pipeline: 11 % of the gateway's CPU in malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "infergate",
    version,
    about = "An inference gateway with WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Path to gateway.toml.
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Load the config and every model folder and plugin, run each folder's samples
    /// (`samples/<case>/`) through its plugins without a backend, report problems, and exit.
    Check {
        /// Path to gateway.toml.
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Check one model folder and its samples without a gateway.toml.
        #[arg(long, conflicts_with = "config")]
        model: Option<PathBuf>,
    },
    /// Plugin projects: write a new one from a template, build one into plugin.wasm.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a standalone plugin project NAME (sources, build file, model.toml, a sample).
    New {
        /// The project's (and route's) name: lower-case letters, digits and '-'.
        name: String,
        /// rust or python.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Rust SDK's folder (plugin-sdk/ or an unpacked .crate); default: the checkout
        /// this binary was built from.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build the project in DIR into DIR/plugin.wasm (cargo, or infergate-plugin for Python).
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_json } => {
            init_tracing(log_json);
            serve(config)
        }
        Command::Check { config, model } => {
            init_tracing(false);
            match model {
                Some(dir) => check_folder(dir),
                None => check(config),
            }
        }
        Command::Plugin(command) => plugin(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infergate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk_path,
        } => {
            let dest = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = sdk_path.or_else(scaffold::default_sdk_path);
            let files = scaffold::new_project(&name, lang.parse()?, &dest, sdk.as_deref())?;
            println!("wrote {} ({} files)", dest.display(), files.len());
        }
        PluginCommand::Build { dir } => {
            println!("built {}", scaffold::build(&dir)?.display());
        }
    }
    Ok(())
}

fn init_tracing(json: bool) {
    // Dependencies speak at warn (notify logs every watch it drops at info); the gateway's own
    // events at info. `RUST_LOG` replaces both.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,infergate=info".into());
    // Colour only for a person at a terminal: never in a log file or a pipe, nor with
    // `NO_COLOR` set (no-color.org).
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&path)?;
    // Backend clients are created (lazily, nothing is dialled) inside a runtime's context.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _context = runtime.enter();
    let gateway = Gateway::load(config)?;
    let table = gateway.routes().snapshot();
    println!("{}: ok, {} model(s)", path.display(), table.routes.len());
    let mut reports = Vec::new();
    for route in table.routes.values() {
        let plugins: Vec<String> = [("pre", &route.pre), ("post", &route.post)]
            .iter()
            .filter_map(|(role, p)| {
                p.as_ref()
                    .map(|p| format!("{role}={} ({})", p.path().display(), p.digest()))
            })
            .collect();
        println!(
            "  {} → {} `{}` {}",
            route.name,
            route.backend_name,
            route.backend_model(),
            plugins.join(" ")
        );
        let subject = samples::Subject::of_route(route);
        let found = runtime.block_on(samples::check_model(&subject));
        print_samples(&found);
        reports.extend(found);
    }
    samples_verdict(&reports)
}

/// `check --model DIR`: one model folder's plugins and samples, no gateway.toml.
fn check_folder(dir: PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Samples run one at a time: a few instance slots are plenty.
    let host = infergate::plugin::Host::sized(4)?
        .with_cache_dir(infergate::config::PluginsConfig::default().effective_cache_dir());
    let subject = samples::Subject::load(&host, &dir)?;
    println!("{}: ok, model `{}`", dir.display(), subject.name);
    let reports = runtime.block_on(samples::check_model(&subject));
    print_samples(&reports);
    samples_verdict(&reports)
}

fn print_samples(reports: &[samples::SampleReport]) {
    for report in reports {
        for line in report.to_string().lines() {
            println!("    {line}");
        }
    }
}

/// A summary line when there were samples; an error (exit 1) when any failed.
fn samples_verdict(reports: &[samples::SampleReport]) -> anyhow::Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!(
        "samples: {} passed, {failed} failed",
        reports.len() - failed
    );
    anyhow::ensure!(failed == 0, "{failed} sample(s) failed");
    Ok(())
}

/// Without `server.workers`, tokio's work-stealing runtime, one thread per CPU. With it, the
/// main runtime is single-threaded and is worker 0 of [`Workers`], beside the accept loops,
/// reloads and health checks, so `server.workers = N` runs on N threads.
fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&path)?;
    let runtime = match config.server.workers {
        None => tokio::runtime::Builder::new_multi_thread(),
        Some(_) => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .context("starting the async runtime")?;
    runtime.block_on(serve_on_runtime(config))
}

async fn serve_on_runtime(config: GatewayConfig) -> anyhow::Result<()> {
    let (listen, admin_listen) = (config.server.listen, config.server.admin_listen);
    let workers = match config.server.workers {
        None => None,
        Some(n) => Some(Workers::start(n).context("starting the workers")?),
    };
    // Compiling plugins is CPU-bound; keep it off the async workers.
    let gateway = tokio::task::spawn_blocking(move || {
        let gateway = Gateway::load(config)?;
        gateway.warm_up_all();
        Ok::<_, infergate::StartError>(gateway)
    })
    .await??;
    let public = infergate::server::bind(listen).with_context(|| format!("binding {listen}"))?;
    let admin = infergate::server::bind(admin_listen)
        .with_context(|| format!("binding admin {admin_listen}"))?;
    // The handlers are installed before the lines below announce the gateway: a supervisor
    // (or a test) that sends SIGTERM as soon as it has been answered must get a drain, not
    // the default disposition that kills the process.
    let shutdown = shutdown_signal();
    // Scripts wait for these exact lines; with port 0 they carry the chosen port.
    println!("infergate listening on http://{}", public.local_addr()?);
    println!("infergate admin on http://{}", admin.local_addr()?);
    let routes = gateway.routes().snapshot().routes.len();
    match &workers {
        Some(workers) => tracing::info!(routes, workers = workers.len(), "serving on workers"),
        None => tracing::info!(routes, "serving"),
    }
    infergate::run_on(Arc::new(gateway), public, admin, shutdown, workers).await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or SIGINT. The handlers are registered when this is called, not when the future is
/// first polled (`tokio::signal::ctrl_c` alone would register lazily).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => tokio::signal::ctrl_c().await.unwrap_or(()),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

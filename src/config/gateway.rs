//! `gateway.toml`: where the gateway listens, how large a body may be, where model folders
//! live, and the named backends that models point at.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{AuthConfig, ConfigError, read_toml};

/// The whole `gateway.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `[server]`
    #[serde(default)]
    pub server: ServerConfig,
    /// `[plugins]`
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// `[auth]` — API keys on the public listener; absent, the public API is open.
    pub auth: Option<AuthConfig>,
    /// `[backends.<name>]` — models name one of these with `backend = "<name>"`.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `listen = "0.0.0.0:8080"` — the public HTTP listener (port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `admin_listen = "127.0.0.1:9090"` — the operator listener (`/admin/...`).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// `max_body_bytes = 16777216` — larger request bodies get 413 before they are read whole.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// `drain_timeout_ms = 30000` — on SIGTERM/SIGINT, how long in-flight requests (and the
    /// batches they wait in) may take to finish before the process exits anyway.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// `admin_token = "…"` — bearer token the admin listener requires
    /// (`Authorization: Bearer …`). Else `$INFERGATE_ADMIN_TOKEN`. Required when
    /// `admin_listen` is not a loopback address: the gateway refuses to start without one.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// `header_timeout_ms = 10000` — how long a client may take to send a request's headers
    /// once the connection waits for them (on HTTP/1.1 that includes the idle time between
    /// keep-alive requests); past it the connection is closed. nginx allows 60 s; a header
    /// block is small, and a shorter bound frees a slow-loris socket six times sooner.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// `body_timeout_ms = 60000` — how long reading a whole request body may take (a
    /// deadline, not a gap between reads, so a body trickled a byte a second can't extend
    /// it); past it, 408 and the connection is closed. nginx's `client_body_timeout` value.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// `idle_timeout_ms = 60000` — a connection with no request in flight for this long is
    /// closed (HTTP/2 gets a GOAWAY), including one that never sends a byte.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// `max_connections = 4096` — open connections on the public listener. At the cap a new
    /// connection closes the one idle the longest; with none idle it is refused. Default:
    /// the file-descriptor limit (`RLIMIT_NOFILE`) less room for backends, plugin files and
    /// the admin listener (a quarter of it, at least 256).
    pub max_connections: Option<usize>,
    /// `max_concurrent_streams = 200` — HTTP/2 streams one connection may have open; a
    /// client opening more gets the extra ones refused (`REFUSED_STREAM`, safe to retry)
    /// while those within the limit are answered.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// `[server.tls]` — serve the public listener over TLS (HTTP/2 by ALPN).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`
/// ```toml
/// [server.tls]
/// cert = "tls/tls.crt"          # PEM: the certificate chain, leaf first
/// key = "tls/tls.key"           # PEM: its private key (PKCS#8, PKCS#1 or SEC1)
/// client_ca = "tls/ca.crt"      # optional: require client certificates signed by these (mTLS)
/// reload_interval_ms = 5000     # how often the files are checked for a rotation
/// ```
/// Relative paths are relative to gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

pub(super) fn default_reload_interval_ms() -> u64 {
    5000
}

fn default_header_timeout_ms() -> u64 {
    10_000
}

fn default_body_timeout_ms() -> u64 {
    60_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_max_concurrent_streams() -> u32 {
    200
}

/// A string kept out of `Debug` output (and so out of logs).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl ServerConfig {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `max_connections`, or what the descriptor limit leaves for connections.
    pub fn effective_max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| crate::server::fd_budget().connections)
    }

    /// The admin token from config, else from `INFERGATE_ADMIN_TOKEN`; empty means none.
    pub fn effective_admin_token(&self) -> Option<String> {
        self.admin_token
            .as_ref()
            .map(|s| s.0.clone())
            .or_else(|| std::env::var("INFERGATE_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            max_body_bytes: default_max_body_bytes(),
            drain_timeout_ms: default_drain_timeout_ms(),
            admin_token: None,
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: None,
            max_concurrent_streams: default_max_concurrent_streams(),
            tls: None,
        }
    }
}

/// `[plugins]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// `dir = "plugins"` — one folder per model; relative paths are relative to gateway.toml.
    #[serde(default = "default_plugin_dir")]
    pub dir: PathBuf,
    /// `watch = "notify"` — how changes under `dir` are noticed: `"notify"` (inotify and
    /// friends), `"poll"` (rescan every `poll_interval_ms`, for filesystems without change
    /// events: NFS, some container mounts) or `"off"` (only `POST /admin/reload`).
    #[serde(default)]
    pub watch: WatchMode,
    /// `poll_interval_ms = 2000` — rescan period in `"poll"` mode.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// `cache_dir = "/var/cache/infergate"` — where compiled plugins are kept between loads
    /// and restarts (keyed by content and engine); relative to gateway.toml. Default:
    /// `$XDG_CACHE_HOME/infergate/compiled` or `~/.cache/infergate/compiled`; `""` disables it.
    /// Must be writable only by the gateway's user: it holds native code.
    pub cache_dir: Option<PathBuf>,
    /// `max_instances = 1000` — plugin instances that may exist at once across all models:
    /// the pooling allocator reserves this many instance slots (each with address space for
    /// one linear memory) at start. A call that finds them all taken waits for one (up to its
    /// model's `limits.timeout_ms`, then 503), as it waits for its model's own slots
    /// (`limits.max_concurrent_calls`, by default at most half of these).
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// `debounce_ms = 250` — quiet time after the last change before a rescan, so a file
    /// still being written (or an editor's temp-file-and-rename) is read once, complete.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: default_plugin_dir(),
            cache_dir: None,
            max_instances: default_max_instances(),
            watch: WatchMode::default(),
            poll_interval_ms: default_poll_interval_ms(),
            debounce_ms: default_debounce_ms(),
        }
    }
}

/// How the plugin directory is watched.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    #[default]
    Notify,
    Poll,
    Off,
}

fn default_max_instances() -> u32 {
    crate::plugin::DEFAULT_MAX_INSTANCES
}

fn default_poll_interval_ms() -> u64 {
    2000
}

fn default_debounce_ms() -> u64 {
    250
}

/// `[backends.<name>]`, told apart by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// `kind = "tfserving"` — TensorFlow Serving (or anything speaking its gRPC API).
    Tfserving(TfServingConfig),
    /// `kind = "onnx"` — ONNX models run inside the gateway (no model server to start); each
    /// model folder names its file with `model_file = "model.onnx"`.
    Onnx(OnnxConfig),
    /// `kind = "kserve_v2"` — a model server speaking the Open Inference Protocol over gRPC
    /// (Triton, OpenVINO Model Server, MLServer, KServe).
    #[serde(rename = "kserve_v2")]
    KserveV2(KserveV2Config),
}

impl BackendConfig {
    /// The `kind = "…"` value, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Tfserving(_) => "tfserving",
            BackendConfig::Onnx(_) => "onnx",
            BackendConfig::KserveV2(_) => "kserve_v2",
        }
    }
}

/// `kind = "onnx"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxConfig {
    /// `threads = 4` — inference threads shared by every model on this backend; a batch runs
    /// on one of them. Default: the machine's cores.
    pub threads: Option<usize>,
    /// `timeout_ms = 10000` — deadline of one model call, queueing for a thread included.
    #[serde(default = "default_backend_timeout_ms")]
    pub timeout_ms: u64,
}

impl OnnxConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `threads`, or the cores this process may use.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// `kind = "tfserving"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TfServingConfig {
    /// `endpoints = ["http://127.0.0.1:8500"]` — gRPC endpoints, used round robin.
    pub endpoints: Vec<String>,
    /// `timeout_ms = 10000` — deadline of one backend call (sent as the gRPC deadline too).
    #[serde(default = "default_backend_timeout_ms")]
    pub timeout_ms: u64,
}

impl TfServingConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `kind = "kserve_v2"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KserveV2Config {
    /// `endpoints = ["http://127.0.0.1:8001"]` — the servers' gRPC endpoints (Triton's
    /// default port is 8001), used round robin.
    pub endpoints: Vec<String>,
    /// `timeout_ms = 10000` — deadline of one backend call (sent as the gRPC deadline too).
    #[serde(default = "default_backend_timeout_ms")]
    pub timeout_ms: u64,
}

impl KserveV2Config {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

fn default_drain_timeout_ms() -> u64 {
    30_000
}

fn default_max_body_bytes() -> usize {
    16 << 20
}

fn default_plugin_dir() -> PathBuf {
    PathBuf::from("plugins")
}

fn default_backend_timeout_ms() -> u64 {
    10_000
}

impl GatewayConfig {
    /// The `[server]` values serde can't check: timeouts above zero, a connection cap the
    /// descriptor limit can hold.
    fn validate_server(&self, path: &Path) -> Result<(), ConfigError> {
        let server = &self.server;
        for (key, value) in [
            ("header_timeout_ms", server.header_timeout_ms),
            ("body_timeout_ms", server.body_timeout_ms),
            ("idle_timeout_ms", server.idle_timeout_ms),
            (
                "max_concurrent_streams",
                u64::from(server.max_concurrent_streams),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    path,
                    format!("server.{key} must be greater than 0"),
                ));
            }
        }
        if let Some(max) = server.max_connections {
            let budget = crate::server::fd_budget();
            if max == 0 {
                return Err(ConfigError::invalid(
                    path,
                    "server.max_connections must be at least 1",
                ));
            }
            if max > budget.connections {
                return Err(ConfigError::invalid(
                    path,
                    format!(
                        "server.max_connections = {max} does not fit the file-descriptor \
                         limit: RLIMIT_NOFILE is {}, which leaves {} for connections after {} \
                         for backends, plugin files and the admin listener; raise the limit \
                         (`ulimit -n`, LimitNOFILE=) or lower server.max_connections",
                        budget.limit, budget.connections, budget.reserved
                    ),
                ));
            }
        }
        if let Some(tls) = &server.tls
            && tls.reload_interval_ms == 0
        {
            return Err(ConfigError::invalid(
                path,
                "server.tls.reload_interval_ms must be greater than 0",
            ));
        }
        Ok(())
    }
}

impl PluginsConfig {
    /// The compiled-plugin cache directory in effect, if any.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(base.join("infergate/compiled"))
            }
        }
    }
}

impl GatewayConfig {
    /// Reads and validates `gateway.toml`; relative paths inside it are resolved against the
    /// file's own folder so the gateway can be started from anywhere.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: GatewayConfig = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.plugins.dir.is_relative() {
            config.plugins.dir = base.join(&config.plugins.dir);
        }
        if let Some(cache) = config
            .plugins
            .cache_dir
            .as_mut()
            .filter(|c| c.is_relative() && !c.as_os_str().is_empty())
        {
            *cache = base.join(&*cache);
        }
        if let Some(tls) = config.server.tls.as_mut() {
            for file in [
                Some(&mut tls.cert),
                Some(&mut tls.key),
                tls.client_ca.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        if let Some(auth) = config.auth.as_mut() {
            auth.resolve(base);
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what serde can't: values in range, endpoints that parse.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                path,
                "server.max_body_bytes must be greater than 0",
            ));
        }
        self.validate_server(path)?;
        if let Some(auth) = &self.auth {
            auth.validate(path)?;
        }
        if self.plugins.max_instances == 0 {
            return Err(ConfigError::invalid(
                path,
                "plugins.max_instances must be at least 1",
            ));
        }
        for (name, backend) in &self.backends {
            match backend {
                BackendConfig::Tfserving(TfServingConfig {
                    endpoints,
                    timeout_ms,
                })
                | BackendConfig::KserveV2(KserveV2Config {
                    endpoints,
                    timeout_ms,
                }) => {
                    if endpoints.is_empty() {
                        return Err(ConfigError::invalid(
                            path,
                            format!("backends.{name}.endpoints is empty"),
                        ));
                    }
                    for endpoint in endpoints {
                        let ok = endpoint
                            .parse::<http::Uri>()
                            .is_ok_and(|u| u.scheme().is_some() && u.host().is_some());
                        if !ok {
                            return Err(ConfigError::invalid(
                                path,
                                format!(
                                    "backends.{name}.endpoints: `{endpoint}` is not a URL like http://host:8500"
                                ),
                            ));
                        }
                    }
                    if *timeout_ms == 0 {
                        return Err(ConfigError::invalid(
                            path,
                            format!("backends.{name}.timeout_ms must be greater than 0"),
                        ));
                    }
                }
                BackendConfig::Onnx(onnx) => {
                    if onnx.threads == Some(0) {
                        return Err(ConfigError::invalid(
                            path,
                            format!("backends.{name}.threads must be at least 1"),
                        ));
                    }
                    if onnx.timeout_ms == 0 {
                        return Err(ConfigError::invalid(
                            path,
                            format!("backends.{name}.timeout_ms must be greater than 0"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

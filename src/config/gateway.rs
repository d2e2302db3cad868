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
    /// `workers = 2` — serve the public listener's connections on this many threads, each a
    /// single-threaded runtime that keeps a connection for its whole life (no work
    /// stealing: a request never changes threads). Cheaper per request (BENCHMARKS.md), but
    /// a request waits behind a long plugin call on its own thread instead of moving to an
    /// idle one. Unset: tokio's work-stealing runtime, one thread per CPU.
    pub workers: Option<usize>,
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
            workers: None,
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
    /// `max_plugin_mb = 128` — largest plugin file a model may ship. Compiling a component
    /// takes memory and CPU in proportion to its size (a 19 MB CPython component compiles
    /// to 36 MB of native code), so a bigger file is refused at load, before it is read,
    /// with a message naming this setting; the model's previous version keeps serving.
    #[serde(default = "default_max_plugin_mb")]
    pub max_plugin_mb: u64,
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
            max_plugin_mb: default_max_plugin_mb(),
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

fn default_max_plugin_mb() -> u64 {
    crate::plugin::DEFAULT_MAX_PLUGIN_MB
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

/// `kind = "tfserving"` or `kind = "kserve_v2"`: a model server reached over gRPC through an
/// endpoint pool (replicas, health checks, failover, TLS); both kinds take the same keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcBackendConfig {
    /// `endpoints = ["http://10.0.0.5:8500", "dns://tfserving-headless.ml.svc.cluster.local:8500"]`
    /// — the model server's replicas (TF Serving's gRPC port is 8500, Triton's 8001). `http://host:port` (`https://` with `[tls]`) is one
    /// endpoint; `dns://name:port` is every address the name resolves to (a Kubernetes
    /// headless Service), re-resolved every `resolve_interval_ms`. Calls go to the less busy
    /// of two healthy endpoints picked at random.
    pub endpoints: Vec<String>,
    /// `timeout_ms = 10000` — deadline of one backend call (sent as the gRPC deadline too); a
    /// retry on another endpoint happens within it.
    #[serde(default = "default_backend_timeout_ms")]
    pub timeout_ms: u64,
    /// `connect_timeout_ms = 2000` — how long connecting to one endpoint may take before the
    /// call fails over (a replica that drops packets rather than refusing).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// `resolve_interval_ms = 5000` — how often `dns://` names are resolved again: addresses
    /// that appear join, those that vanish drain (no new calls; calls in flight finish).
    #[serde(default = "default_resolve_interval_ms")]
    pub resolve_interval_ms: u64,
    /// `[backends.<name>.health]` — active checks and ejection.
    #[serde(default)]
    pub health: HealthConfig,
    /// `[backends.<name>.retry]` — the failover retry budget.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[backends.<name>.tls]` — TLS (and client certificates) to every endpoint.
    #[serde(default)]
    pub tls: Option<BackendTlsConfig>,
}

impl GrpcBackendConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `endpoints`, parsed (valid once [`GatewayConfig::validate`] passed; invalid entries
    /// are left out).
    pub fn endpoint_specs(&self) -> Vec<EndpointSpec> {
        self.endpoints
            .iter()
            .filter_map(|e| EndpointSpec::parse(e, self.tls.is_some()).ok())
            .collect()
    }
}

/// One entry of a backend's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// `http://host:port` or `https://host:port`: one endpoint, dialled at `url`.
    Url {
        url: String,
        /// `host:port` as written: the endpoint's name in messages and metrics.
        authority: String,
    },
    /// `dns://name:port`: every address `name` resolves to, at `port`.
    Dns { host: String, port: u16 },
}

impl EndpointSpec {
    /// Parses one entry; `tls` says whether the backend has a `tls` table (then URLs are
    /// `https://`).
    /// The error says what a valid entry looks like.
    pub fn parse(endpoint: &str, tls: bool) -> Result<Self, String> {
        let like =
            "like http://host:8500, https://host:8500 (with a `tls` table) or dns://name:8500";
        let uri = endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.host().is_some_and(|h| !h.is_empty()))
            .filter(|u| {
                u.path_and_query()
                    .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty())
            })
            .ok_or_else(|| format!("`{endpoint}` is not an endpoint {like}"))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        match uri.scheme_str() {
            Some("dns") => {
                let port = uri.port_u16().ok_or_else(|| {
                    format!("`{endpoint}` needs a port: dns://name:port (TF Serving's gRPC port is 8500)")
                })?;
                let host = uri.host().unwrap_or_default().to_string();
                Ok(EndpointSpec::Dns { host, port })
            }
            Some("http") if tls => Err(format!(
                "`{endpoint}` is plain http:// but this backend has a `tls` table: write https://{authority}"
            )),
            Some("https") if !tls => Err(format!(
                "`{endpoint}` is https:// but this backend has no `tls` table: add one with `ca = \"<ca.pem>\"`"
            )),
            Some("http" | "https") => Ok(EndpointSpec::Url {
                url: format!("{}://{authority}", uri.scheme_str().unwrap_or_default()),
                authority,
            }),
            _ => Err(format!("`{endpoint}` is not an endpoint {like}")),
        }
    }
}

/// `[backends.<name>.health]` — how endpoints are judged. Any gRPC backend kind shares it.
///
/// Each endpoint is asked `GetModelStatus` for every model routed to the backend every
/// `interval_ms`; an endpoint that doesn't have a model AVAILABLE gets no calls for it while
/// another does. `failures_to_eject` transport failures or `UNAVAILABLE` answers in a row
/// (calls and checks alike) eject the endpoint for `ejection_ms`, doubling while its checks
/// keep failing, up to `max_ejection_ms`; its first check that succeeds re-admits it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `interval_ms = 2000` — period of the active checks of a healthy endpoint.
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    /// `timeout_ms = 1000` — how long one check may take; past it, the check failed.
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// `failures_to_eject = 3` — consecutive failures that eject an endpoint.
    #[serde(default = "default_failures_to_eject")]
    pub failures_to_eject: u32,
    /// `ejection_ms = 500` — the first ejection; each check that fails while ejected doubles it.
    #[serde(default = "default_ejection_ms")]
    pub ejection_ms: u64,
    /// `max_ejection_ms = 1000` — the longest ejection, so a replica that comes back at the
    /// same address takes calls again within this (plus one check) of answering.
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_health_interval_ms(),
            timeout_ms: default_health_timeout_ms(),
            failures_to_eject: default_failures_to_eject(),
            ejection_ms: default_ejection_ms(),
            max_ejection_ms: default_max_ejection_ms(),
        }
    }
}

/// `[backends.<name>.retry]` — a call that failed before the server could have run it
/// (connection refused or reset before an answer, `UNAVAILABLE`) is retried once on another
/// endpoint, within the call's deadline; nothing else is retried. Retries are capped at a
/// fraction of calls over the last 10 s, so a failing fleet is not sent twice its traffic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// `budget_ratio = 0.2` — retries may be at most this fraction of calls (0 to 1).
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// `min_per_second = 10` — retries allowed whatever the traffic (so a quiet backend still
    /// fails over); 0 with `budget_ratio = 0` turns retries off.
    #[serde(default = "default_min_retries_per_second")]
    pub min_per_second: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            budget_ratio: default_budget_ratio(),
            min_per_second: default_min_retries_per_second(),
        }
    }
}

impl BackendTlsConfig {
    /// Makes relative file paths relative to `base` (gateway.toml's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [Some(&mut self.ca), self.cert.as_mut(), self.key.as_mut()]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

/// `[backends.<name>.tls]` — TLS to the model servers (TF Serving's `--ssl_config_file`).
/// With it, every endpoint is dialled over TLS (`https://` URLs; `dns://` names alike).
/// Files are PEM, relative to gateway.toml, read when the gateway starts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// `ca = "certs/ca.pem"` — the CA certificate(s) the servers' certificates must chain to.
    pub ca: PathBuf,
    /// `cert = "certs/client.pem"` — a client certificate chain to present (mutual TLS); needs
    /// `key`.
    pub cert: Option<PathBuf>,
    /// `key = "certs/client.key"` — the client certificate's private key.
    pub key: Option<PathBuf>,
    /// `server_name = "tfserving.internal"` — the name the servers' certificates must carry
    /// (and the SNI sent), instead of each endpoint's host (a `dns://` endpoint's default is
    /// its name): for addresses whose certificates name a service name.
    pub server_name: Option<String>,
}

/// `kind = "tfserving"`: TF Serving's gRPC API.
pub type TfServingConfig = GrpcBackendConfig;

/// `kind = "kserve_v2"`: the Open Inference Protocol's gRPC API.
pub type KserveV2Config = GrpcBackendConfig;

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

fn default_connect_timeout_ms() -> u64 {
    2000
}

fn default_resolve_interval_ms() -> u64 {
    5000
}

fn default_health_interval_ms() -> u64 {
    2000
}

fn default_health_timeout_ms() -> u64 {
    1000
}

fn default_failures_to_eject() -> u32 {
    3
}

fn default_ejection_ms() -> u64 {
    500
}

fn default_max_ejection_ms() -> u64 {
    1000
}

fn default_budget_ratio() -> f64 {
    0.2
}

fn default_min_retries_per_second() -> f64 {
    10.0
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
            ("workers", server.workers.map_or(1, |w| w as u64)),
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
        for backend in config.backends.values_mut() {
            if let BackendConfig::Tfserving(grpc) | BackendConfig::KserveV2(grpc) = backend
                && let Some(tls) = grpc.tls.as_mut()
            {
                tls.resolve_paths(base);
            }
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
        if self.plugins.max_plugin_mb == 0 {
            return Err(ConfigError::invalid(
                path,
                "plugins.max_plugin_mb must be at least 1",
            ));
        }
        for (name, backend) in &self.backends {
            match backend {
                BackendConfig::Tfserving(grpc) | BackendConfig::KserveV2(grpc) => {
                    validate_grpc_backend(path, name, grpc)?;
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

/// The `[backends.<name>]` checks of a gRPC backend (`tfserving`, `kserve_v2`): endpoints
/// that parse, each once, and every duration and ratio in range.
fn validate_grpc_backend(
    path: &Path,
    name: &str,
    tfs: &GrpcBackendConfig,
) -> Result<(), ConfigError> {
    let invalid = |message: String| Err(ConfigError::invalid(path, message));
    if tfs.endpoints.is_empty() {
        return invalid(format!("backends.{name}.endpoints is empty"));
    }
    let mut seen = Vec::new();
    for endpoint in &tfs.endpoints {
        let spec = EndpointSpec::parse(endpoint, tfs.tls.is_some())
            .map_err(|e| ConfigError::invalid(path, format!("backends.{name}.endpoints: {e}")))?;
        if seen.contains(&spec) {
            return invalid(format!(
                "backends.{name}.endpoints: `{endpoint}` is listed twice"
            ));
        }
        seen.push(spec);
    }
    let positive = [
        ("timeout_ms", tfs.timeout_ms),
        ("connect_timeout_ms", tfs.connect_timeout_ms),
        ("resolve_interval_ms", tfs.resolve_interval_ms),
        ("health.interval_ms", tfs.health.interval_ms),
        ("health.timeout_ms", tfs.health.timeout_ms),
        ("health.ejection_ms", tfs.health.ejection_ms),
        (
            "health.failures_to_eject",
            u64::from(tfs.health.failures_to_eject),
        ),
    ];
    for (key, value) in positive {
        if value == 0 {
            return invalid(format!("backends.{name}.{key} must be greater than 0"));
        }
    }
    if tfs.health.max_ejection_ms < tfs.health.ejection_ms {
        return invalid(format!(
            "backends.{name}.health.max_ejection_ms ({}) must be at least health.ejection_ms ({})",
            tfs.health.max_ejection_ms, tfs.health.ejection_ms
        ));
    }
    let retry = &tfs.retry;
    if !(0.0..=1.0).contains(&retry.budget_ratio) {
        return invalid(format!(
            "backends.{name}.retry.budget_ratio must be between 0 and 1, not {}",
            retry.budget_ratio
        ));
    }
    if !(retry.min_per_second.is_finite() && retry.min_per_second >= 0.0) {
        return invalid(format!(
            "backends.{name}.retry.min_per_second must be 0 or more, not {}",
            retry.min_per_second
        ));
    }
    if let Some(tls) = &tfs.tls
        && tls.cert.is_some() != tls.key.is_some()
    {
        return invalid(format!(
            "backends.{name}.tls: `cert` and `key` go together (a client certificate needs its key)"
        ));
    }
    Ok(())
}

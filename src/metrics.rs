//! Prometheus metrics: what operators scrape at `GET /metrics`. One [`Metrics`] per gateway,
//! registered on a registry its owner passes in (no process globals, so tests and embedders
//! can run several gateways side by side), and a [`ModelMetrics`] handle per route that holds
//! the model's series already resolved, so the request path never builds label sets.
//!
//! Names are prefixed `infergate_`, in base units (seconds, rows), counters end in `_total`.
//! The exposition is OpenMetrics text, which Prometheus scrapes natively.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    /// `latest`, a version number, or `label:<name>`.
    pub version: String,
    pub status: u16,
    /// `rest`, `grpc`, `v2` or `v2_grpc`: the API the request came in on.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub model: String,
    /// `pre`, `queue`, `backend` or `post`.
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub model: String,
    /// `pre` or `post`.
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub model: String,
    /// `added`, `reloaded`, `removed` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendErrorLabels {
    pub model: String,
    /// The gRPC code name, e.g. `UNAVAILABLE`.
    pub code: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request and stage latencies: 50 µs to ~6.5 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new((0..18).map(|i| 50e-6 * f64::powi(2.0, i)))
}

/// Plugin instantiation: 5 µs to ~80 ms, doubling.
fn instantiate_histogram() -> Histogram {
    Histogram::new((0..15).map(|i| 5e-6 * f64::powi(2.0, i)))
}

/// Rows per backend call: 1, 2, 4, … 4096.
fn batch_histogram() -> Histogram {
    Histogram::new((0..13).map(|i| f64::powi(2.0, i)))
}

/// Every series the gateway exports. Cloning shares the series (as the registry does).
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<ModelLabel>,
    stage_seconds: HistogramFamily<StageLabels>,
    batch_rows: HistogramFamily<ModelLabel>,
    queue_depth: Family<ModelLabel, Gauge>,
    batch_queues: Family<ModelLabel, Gauge>,
    in_flight: Family<ModelLabel, Gauge>,
    plugin_instantiate_seconds: HistogramFamily<PluginLabels>,
    reloads: Family<ReloadLabels, Counter>,
    backend_errors: Family<BackendErrorLabels, Counter>,
}

impl Metrics {
    /// Creates the gateway's metrics and registers them on `registry` (under `infergate_`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let r = registry.sub_registry_with_prefix("infergate");
        r.register(
            "requests",
            "Predict requests answered, by model, version, HTTP status and protocol",
            metrics.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Whole predict request, body read to response",
            Unit::Seconds,
            metrics.request_seconds.clone(),
        );
        r.register_with_unit(
            "stage_duration",
            "Time per pipeline stage: pre plugin, queue wait, backend call (per batch), post plugin",
            Unit::Seconds,
            metrics.stage_seconds.clone(),
        );
        r.register(
            "batch_size_rows",
            "Rows per backend call, padding excluded",
            metrics.batch_rows.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting in the model's batch queues",
            metrics.queue_depth.clone(),
        );
        r.register(
            "batch_queues",
            "Batch queues open for the model (one per version, signature and input shapes; at most batching.max_queues)",
            metrics.batch_queues.clone(),
        );
        r.register(
            "requests_in_flight",
            "Predict requests being handled now",
            metrics.in_flight.clone(),
        );
        r.register_with_unit(
            "plugin_instantiate_duration",
            "Creating a fresh plugin instance for one call",
            Unit::Seconds,
            metrics.plugin_instantiate_seconds.clone(),
        );
        r.register(
            "reloads",
            "Model folder (re)loads, by outcome: added, reloaded, removed, failed",
            metrics.reloads.clone(),
        );
        r.register(
            "backend_errors",
            "Failed backend calls, by gRPC code",
            metrics.backend_errors.clone(),
        );
        metrics
    }

    /// Metrics nobody scrapes: for batchers and routes built outside a gateway (tests, benches).
    pub fn unregistered() -> Self {
        Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            stage_seconds: Family::new_with_constructor(latency_histogram),
            batch_rows: Family::new_with_constructor(batch_histogram),
            queue_depth: Family::default(),
            batch_queues: Family::default(),
            in_flight: Family::default(),
            plugin_instantiate_seconds: Family::new_with_constructor(instantiate_histogram),
            reloads: Family::default(),
            backend_errors: Family::default(),
        }
    }

    /// The series of one model, resolved once.
    pub fn model(&self, model: &str) -> ModelMetrics {
        let label = ModelLabel {
            model: model.to_string(),
        };
        let stage = |stage: &str| {
            self.stage_seconds
                .get_or_create(&StageLabels {
                    model: model.to_string(),
                    stage: stage.to_string(),
                })
                .clone()
        };
        let instantiate = |role: &str| {
            self.plugin_instantiate_seconds
                .get_or_create(&PluginLabels {
                    model: model.to_string(),
                    role: role.to_string(),
                })
                .clone()
        };
        ModelMetrics {
            model: model.to_string(),
            requests: self.requests.clone(),
            backend_errors: self.backend_errors.clone(),
            request_seconds: self.request_seconds.get_or_create(&label).clone(),
            pre_seconds: stage("pre"),
            queue_seconds: stage("queue"),
            backend_seconds: stage("backend"),
            post_seconds: stage("post"),
            batch_rows: self.batch_rows.get_or_create(&label).clone(),
            queue_depth: self.queue_depth.get_or_create(&label).clone(),
            batch_queues: self.batch_queues.get_or_create(&label).clone(),
            in_flight: self.in_flight.get_or_create(&label).clone(),
            pre_instantiate_seconds: instantiate("pre"),
            post_instantiate_seconds: instantiate("post"),
        }
    }

    /// Counts one (re)load outcome of a model folder.
    pub fn reload(&self, model: &str, outcome: &str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                model: model.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// One model's series. Cloning shares them.
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    model: String,
    requests: Family<RequestLabels, Counter>,
    backend_errors: Family<BackendErrorLabels, Counter>,
    pub request_seconds: Histogram,
    pub pre_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub backend_seconds: Histogram,
    pub post_seconds: Histogram,
    pub batch_rows: Histogram,
    pub queue_depth: Gauge,
    /// Batch queues open (each one a task).
    pub batch_queues: Gauge,
    pub in_flight: Gauge,
    pub pre_instantiate_seconds: Histogram,
    pub post_instantiate_seconds: Histogram,
}

impl ModelMetrics {
    /// A handle whose series go nowhere.
    pub fn detached(model: &str) -> Self {
        Metrics::unregistered().model(model)
    }

    /// Counts one answered request.
    pub fn request(&self, version: &str, status: u16, protocol: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                model: self.model.clone(),
                version: version.to_string(),
                status,
                protocol,
            })
            .inc();
    }

    /// Counts one failed backend call.
    pub fn backend_error(&self, code: &str) {
        self.backend_errors
            .get_or_create(&BackendErrorLabels {
                model: self.model.clone(),
                code: code.to_string(),
            })
            .inc();
    }
}

/// Observes a duration in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

/// The registry in OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String can't fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

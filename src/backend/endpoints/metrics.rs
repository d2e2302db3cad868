//! The per-endpoint series of every gRPC backend: calls, errors by code, latency, health,
//! ejections, outstanding calls, and per backend the retries and the healthy endpoints of each
//! routed model. Registered once per gateway on the registry its owner passes in; an
//! endpoint's series are removed when it leaves the set (a `dns://` address that vanished), so
//! pod churn doesn't grow them without bound.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub backend: String,
    /// `host:port` as dialled (for `dns://` names, each resolved address).
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointCodeLabels {
    pub backend: String,
    pub endpoint: String,
    /// The gRPC code name, e.g. `UNAVAILABLE`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub backend: String,
    /// `retried`, `budget_exhausted`, `no_other_endpoint` or `past_deadline`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendModelLabels {
    pub backend: String,
    pub model: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Call latencies: 50 µs to ~6.5 s, doubling (as the gateway's other latencies).
fn latency_histogram() -> Histogram {
    Histogram::new((0..18).map(|i| 50e-6 * f64::powi(2.0, i)))
}

/// The families every gRPC backend's endpoints report into. Cloning shares them.
#[derive(Clone)]
pub struct EndpointMetrics {
    calls: Family<EndpointLabels, Counter>,
    errors: Family<EndpointCodeLabels, Counter>,
    duration: HistogramFamily<EndpointLabels>,
    healthy: Family<EndpointLabels, Gauge>,
    outstanding: Family<EndpointLabels, Gauge>,
    ejections: Family<EndpointLabels, Counter>,
    check_failures: Family<EndpointLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    model_endpoints: Family<BackendModelLabels, Gauge>,
}

impl EndpointMetrics {
    /// Creates the families and registers them on `registry` (under `infergate_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("infergate");
        r.register(
            "endpoint_calls",
            "Backend calls (Predict, metadata, status; not health checks) sent to the endpoint",
            m.calls.clone(),
        );
        r.register(
            "endpoint_errors",
            "Failed calls to the endpoint, by gRPC code",
            m.errors.clone(),
        );
        r.register_with_unit(
            "endpoint_call_duration",
            "One call to the endpoint, sent to answered",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "endpoint_healthy",
            "1 while the endpoint takes calls, 0 while it is ejected",
            m.healthy.clone(),
        );
        r.register(
            "endpoint_outstanding_calls",
            "Calls in flight to the endpoint (what balancing compares)",
            m.outstanding.clone(),
        );
        r.register(
            "endpoint_ejections",
            "Times the endpoint was ejected after consecutive failures",
            m.ejections.clone(),
        );
        r.register(
            "endpoint_check_failures",
            "Active health checks of the endpoint that got no answer",
            m.check_failures.clone(),
        );
        r.register(
            "backend_retries",
            "Calls that failed before the server could run them, by what happened next: \
             retried (on another endpoint), budget_exhausted, no_other_endpoint, past_deadline",
            m.retries.clone(),
        );
        r.register(
            "backend_model_healthy_endpoints",
            "Endpoints taking calls that serve the model (0: /readyz answers 503)",
            m.model_endpoints.clone(),
        );
        m
    }

    /// Families nobody scrapes: backends built outside a gateway (tests, `infergate check`).
    pub fn unregistered() -> Self {
        Self {
            calls: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            healthy: Family::default(),
            outstanding: Family::default(),
            ejections: Family::default(),
            check_failures: Family::default(),
            retries: Family::default(),
            model_endpoints: Family::default(),
        }
    }

    /// The series of one endpoint of `backend`, created now (healthy, no calls).
    pub(super) fn endpoint(&self, backend: &str, endpoint: &str) -> EndpointSeries {
        let labels = EndpointLabels {
            backend: backend.to_string(),
            endpoint: endpoint.to_string(),
        };
        let series = EndpointSeries {
            calls: self.calls.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            healthy: self.healthy.get_or_create(&labels).clone(),
            outstanding: self.outstanding.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
            check_failures: self.check_failures.get_or_create(&labels).clone(),
            codes: Mutex::new(BTreeSet::new()),
            families: self.clone(),
            labels,
        };
        series.healthy.set(1);
        series
    }

    pub(super) fn retry(&self, backend: &str, outcome: &str) {
        self.retries
            .get_or_create(&RetryLabels {
                backend: backend.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub(super) fn model_endpoints(&self, backend: &str, model: &str, healthy: usize) {
        self.model_endpoints
            .get_or_create(&BackendModelLabels {
                backend: backend.to_string(),
                model: model.to_string(),
            })
            .set(healthy as i64);
    }

    /// Drops a model's series once no route calls it any more.
    pub(super) fn forget_model(&self, backend: &str, model: &str) {
        self.model_endpoints.remove(&BackendModelLabels {
            backend: backend.to_string(),
            model: model.to_string(),
        });
    }
}

/// One endpoint's series, resolved once.
pub(super) struct EndpointSeries {
    pub(super) calls: Counter,
    pub(super) duration: Histogram,
    pub(super) healthy: Gauge,
    pub(super) outstanding: Gauge,
    pub(super) ejections: Counter,
    pub(super) check_failures: Counter,
    /// The codes this endpoint has counted errors under, so they can be removed with it.
    /// A std mutex: one insert per failed call.
    codes: Mutex<BTreeSet<&'static str>>,
    families: EndpointMetrics,
    labels: EndpointLabels,
}

impl EndpointSeries {
    pub(super) fn error(&self, code: &'static str) {
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(code);
        self.families
            .errors
            .get_or_create(&EndpointCodeLabels {
                backend: self.labels.backend.clone(),
                endpoint: self.labels.endpoint.clone(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Removes every series of this endpoint (it left the set).
    pub(super) fn remove(&self) {
        let f = &self.families;
        f.calls.remove(&self.labels);
        f.duration.remove(&self.labels);
        f.healthy.remove(&self.labels);
        f.outstanding.remove(&self.labels);
        f.ejections.remove(&self.labels);
        f.check_failures.remove(&self.labels);
        let codes = self
            .codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for code in codes.iter() {
            f.errors.remove(&EndpointCodeLabels {
                backend: self.labels.backend.clone(),
                endpoint: self.labels.endpoint.clone(),
                code: (*code).to_string(),
            });
        }
    }
}

//! One model-server replica: its channel (lazily connected, reconnecting by itself), the
//! calls in flight to it, and its health: consecutive failures, ejection with a doubling
//! backoff, and which routed models its last check found it serving.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;

use super::metrics::EndpointSeries;

/// How ejection works, from `[backends.<name>.health]`.
#[derive(Clone, Debug)]
pub(super) struct Ejection {
    pub(super) failures_to_eject: u32,
    pub(super) first: Duration,
    pub(super) max: Duration,
    pub(super) check_interval: Duration,
}

pub(super) struct Endpoint {
    /// `host:port`: what the endpoint is known by in messages and metrics.
    pub(super) addr: String,
    pub(super) channel: Channel,
    outstanding: AtomicUsize,
    /// A std mutex: held for a few field updates, never across an await.
    state: Mutex<State>,
    pub(super) series: EndpointSeries,
}

struct State {
    /// Failed calls and checks in a row.
    failures: u32,
    /// Set while ejected: it gets no calls until a check succeeds at or after this time.
    ejected_until: Option<Instant>,
    /// Ejections since it last passed a check while taking calls: the backoff's exponent.
    ejections: u32,
    last_error: Option<String>,
    /// What the last check said per routed model: `Err` says why it doesn't serve it now.
    models: HashMap<String, Result<(), String>>,
    next_check: Instant,
}

/// What a call or a check told about the endpoint.
pub(super) enum Verdict {
    /// The server answered (whatever it answered).
    Answered,
    /// A transport failure or `UNAVAILABLE`: counts toward ejection.
    Failed(String),
    /// Neither: the call ran out of time, which says nothing sure about the server.
    Inconclusive,
}

impl Endpoint {
    pub(super) fn new(addr: String, channel: Channel, series: EndpointSeries) -> Self {
        Self {
            addr,
            channel,
            outstanding: AtomicUsize::new(0),
            state: Mutex::new(State {
                failures: 0,
                ejected_until: None,
                ejections: 0,
                last_error: None,
                models: HashMap::new(),
                next_check: Instant::now(),
            }),
            series,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Not ejected: it may get calls.
    pub(super) fn takes_calls(&self) -> bool {
        self.state().ejected_until.is_none()
    }

    /// Takes calls and its last check did not find `model` missing.
    pub(super) fn serves(&self, model: &str) -> bool {
        let state = self.state();
        state.ejected_until.is_none() && !matches!(state.models.get(model), Some(Err(_)))
    }

    /// Counts a call in flight until the guard drops; the guard times it.
    pub(super) fn start_call(&self) -> CallGuard<'_> {
        let n = self.outstanding.fetch_add(1, Ordering::Relaxed) + 1;
        self.series.outstanding.set(n as i64);
        self.series.calls.inc();
        CallGuard {
            endpoint: self,
            started: Instant::now(),
        }
    }

    /// Records what a call found; true when this ejected the endpoint.
    pub(super) fn record_call(&self, verdict: Verdict, rules: &Ejection) -> bool {
        match verdict {
            Verdict::Answered => {
                self.state().failures = 0;
                false
            }
            Verdict::Failed(error) => {
                let mut state = self.state();
                state.failures += 1;
                state.last_error = Some(error);
                let eject =
                    state.ejected_until.is_none() && state.failures >= rules.failures_to_eject;
                if eject {
                    self.eject(&mut state, rules);
                }
                eject
            }
            Verdict::Inconclusive => false,
        }
    }

    /// Records a check: `Ok` with what it found per model, or `Err` when the server did not
    /// answer. A passed check re-admits an ejected endpoint; a failed one while ejected
    /// doubles the ejection.
    pub(super) fn record_check(
        &self,
        result: Result<HashMap<String, Result<(), String>>, String>,
        rules: &Ejection,
    ) {
        let now = Instant::now();
        let mut state = self.state();
        match result {
            Ok(models) => {
                state.models = models;
                state.failures = 0;
                if state.ejected_until.take().is_some() {
                    self.series.healthy.set(1);
                    tracing::info!(endpoint = %self.addr, "endpoint re-admitted: its check passed");
                } else {
                    // A whole interval healthy: the next ejection starts from the first step.
                    state.ejections = 0;
                }
                state.next_check = now + rules.check_interval;
            }
            Err(error) => {
                self.series.check_failures.inc();
                state.failures += 1;
                state.last_error = Some(error);
                // Ejected already: its re-admission check failed, so the ejection doubles.
                if state.ejected_until.is_some() || state.failures >= rules.failures_to_eject {
                    self.eject(&mut state, rules);
                } else {
                    state.next_check = now + rules.check_interval;
                }
            }
        }
    }

    /// Ejects (or keeps ejected) for the next backoff step, and schedules the check that may
    /// re-admit it.
    fn eject(&self, state: &mut State, rules: &Ejection) {
        let factor = 1u32.checked_shl(state.ejections).unwrap_or(u32::MAX);
        let backoff = rules.first.saturating_mul(factor).min(rules.max);
        let until = Instant::now() + backoff;
        if state.ejected_until.is_none() {
            self.series.ejections.inc();
            self.series.healthy.set(0);
            tracing::warn!(
                endpoint = %self.addr,
                failures = state.failures,
                backoff_ms = backoff.as_millis() as u64,
                "endpoint ejected: {}",
                state.last_error.as_deref().unwrap_or("")
            );
        }
        state.ejections = state.ejections.saturating_add(1);
        state.ejected_until = Some(until);
        state.next_check = until;
    }

    /// When the next check is due.
    pub(super) fn next_check(&self) -> Instant {
        self.state().next_check
    }

    /// Makes a check due now (a model was routed here).
    pub(super) fn check_soon(&self) {
        let mut state = self.state();
        if state.ejected_until.is_none() {
            state.next_check = Instant::now();
        }
    }

    /// One line on why it can't serve `model`, for error messages and `/readyz`.
    pub(super) fn describe(&self, model: &str) -> String {
        let state = self.state();
        let last = state.last_error.as_deref().unwrap_or("no error recorded");
        if state.ejected_until.is_some() {
            format!(
                "{} ejected after {} failures ({last})",
                self.addr, state.failures
            )
        } else if let Some(Err(why)) = state.models.get(model) {
            format!("{} does not serve `{model}` ({why})", self.addr)
        } else {
            format!("{} healthy", self.addr)
        }
    }
}

/// A call in flight; dropping it ends the call's accounting.
pub(super) struct CallGuard<'a> {
    endpoint: &'a Endpoint,
    started: Instant,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let e = self.endpoint;
        let n = e.outstanding.fetch_sub(1, Ordering::Relaxed) - 1;
        e.series.outstanding.set(n as i64);
        e.series
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

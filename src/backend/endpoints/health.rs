//! The pool's background task: resolves `dns://` names again every `resolve_interval_ms`,
//! and checks each endpoint when its check is due — every `interval_ms` while it takes calls,
//! at the end of its ejection while ejected — asking the kind's [`Probe`] about every routed
//! model. One task per pool, owned by it: it holds only a weak reference and stops when the
//! pool is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::Inner;
use super::endpoint::Endpoint;

/// What a check found.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeOutcome {
    /// The server serves the model (a version is AVAILABLE), or, asked about no model,
    /// answered at all.
    Ready,
    /// The server answered but doesn't serve the model now (not loaded, still loading).
    NotReady(String),
    /// No answer: a transport failure or `UNAVAILABLE`.
    Unreachable(String),
}

/// How a backend kind asks one of its servers whether it serves a model: TF Serving's
/// `GetModelStatus`, KServe v2's `ModelReady`. The pool bounds each check by its timeout.
pub trait Probe: Send + Sync + 'static {
    /// Asks the server behind `channel` (at `endpoint`, `host:port`) about `model` (`None`:
    /// only whether it answers), within `timeout` (send it as the gRPC deadline).
    fn check(
        &self,
        channel: Channel,
        endpoint: &str,
        model: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'static, ProbeOutcome>;
}

/// Runs until `stop` is cancelled or the pool is gone.
pub(super) async fn run(pool: Weak<Inner>, wake: Arc<Notify>, stop: CancellationToken) {
    let mut next_resolve = Instant::now();
    loop {
        // Registered before looking at the state, so a wake-up sent meanwhile isn't lost.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(inner) = pool.upgrade() else {
            return;
        };
        if inner.has_dns() && Instant::now() >= next_resolve {
            inner.refresh().await;
            next_resolve = Instant::now() + inner.resolve_interval;
        }
        check_due(&inner).await;
        inner.update_model_gauges();
        let mut next = inner
            .endpoints
            .load()
            .iter()
            .map(|e| e.next_check())
            .min()
            .unwrap_or_else(|| Instant::now() + inner.rules.check_interval);
        if inner.has_dns() {
            next = next.min(next_resolve);
        }
        drop(inner);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
            () = &mut notified => {}
        }
    }
}

/// Checks, concurrently, every endpoint whose check is due.
async fn check_due(inner: &Inner) {
    let now = Instant::now();
    let models = inner.routed_models();
    let due: Vec<Arc<Endpoint>> = inner
        .endpoints
        .load()
        .iter()
        .filter(|e| e.next_check() <= now)
        .cloned()
        .collect();
    join_all(due.iter().map(|e| check(inner, e, &models))).await;
}

/// One endpoint's check: every routed model (or, with none, whether it answers).
async fn check(inner: &Inner, endpoint: &Endpoint, models: &[String]) {
    let result = if models.is_empty() {
        match probe(inner, endpoint, None).await {
            ProbeOutcome::Unreachable(why) => Err(why),
            _ => Ok(HashMap::new()),
        }
    } else {
        let outcomes = join_all(
            models
                .iter()
                .map(|m| probe(inner, endpoint, Some(m.clone()))),
        )
        .await;
        let unreachable = outcomes.iter().find_map(|o| match o {
            ProbeOutcome::Unreachable(why) => Some(why.clone()),
            _ => None,
        });
        match unreachable {
            Some(why) => Err(why),
            None => Ok(models
                .iter()
                .cloned()
                .zip(outcomes)
                .map(|(model, outcome)| match outcome {
                    ProbeOutcome::NotReady(why) => (model, Err(why)),
                    _ => (model, Ok(())),
                })
                .collect()),
        }
    };
    endpoint.record_check(result, &inner.rules);
}

async fn probe(inner: &Inner, endpoint: &Endpoint, model: Option<String>) -> ProbeOutcome {
    let timeout = inner.check_timeout;
    let check = inner
        .probe
        .check(endpoint.channel.clone(), &endpoint.addr, model, timeout);
    match tokio::time::timeout(timeout, check).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Unreachable(format!(
            "health check got no answer within {}ms",
            timeout.as_millis()
        )),
    }
}

//! The pool on a paused clock with scripted servers: calls and checks answer from a script per
//! endpoint (the channels are never dialled), so balancing, ejection, re-admission, failover,
//! the budget and re-resolution are checked step by step, without timing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use super::*;

/// What each scripted endpoint answers, and when it was checked.
#[derive(Default)]
struct Script {
    /// Per endpoint: `Err(code)` fails calls with that code; absent answers OK.
    calls: Mutex<HashMap<String, Code>>,
    /// Per endpoint: what its checks find; absent is `Ready`.
    checks: Mutex<HashMap<String, ProbeOutcome>>,
    checked: Mutex<Vec<(String, Instant)>>,
    served: Mutex<HashMap<String, usize>>,
}

impl Script {
    fn fail_calls(&self, endpoint: &str, code: Code) {
        self.calls.lock().unwrap().insert(endpoint.into(), code);
    }

    fn heal_calls(&self, endpoint: &str) {
        self.calls.lock().unwrap().remove(endpoint);
    }

    fn check_finds(&self, endpoint: &str, outcome: ProbeOutcome) {
        self.checks.lock().unwrap().insert(endpoint.into(), outcome);
    }

    fn served(&self, endpoint: &str) -> usize {
        self.served
            .lock()
            .unwrap()
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    fn checks_of(&self, endpoint: &str) -> Vec<Instant> {
        let checked = self.checked.lock().unwrap();
        checked
            .iter()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, at)| *at)
            .collect()
    }

    fn answer(&self, endpoint: &str) -> Result<&'static str, tonic::Status> {
        *self
            .served
            .lock()
            .unwrap()
            .entry(endpoint.into())
            .or_default() += 1;
        match self.calls.lock().unwrap().get(endpoint) {
            Some(code) => Err(tonic::Status::new(*code, "scripted")),
            None => Ok("answer"),
        }
    }
}

struct ScriptedProbe(Arc<Script>);

impl Probe for ScriptedProbe {
    fn check(
        &self,
        _channel: Channel,
        endpoint: &str,
        _model: Option<String>,
        _timeout: Duration,
    ) -> BoxFuture<'static, ProbeOutcome> {
        let script = &self.0;
        script
            .checked
            .lock()
            .unwrap()
            .push((endpoint.to_string(), Instant::now()));
        let outcome = script
            .checks
            .lock()
            .unwrap()
            .get(endpoint)
            .cloned()
            .unwrap_or(ProbeOutcome::Ready);
        Box::pin(std::future::ready(outcome))
    }
}

const A: &str = "10.0.0.1:8500";
const B: &str = "10.0.0.2:8500";
const C: &str = "10.0.0.3:8500";

fn url(addr: &str) -> EndpointSpec {
    EndpointSpec::Url {
        url: format!("http://{addr}"),
        authority: addr.to_string(),
    }
}

fn settings(endpoints: Vec<EndpointSpec>) -> Settings {
    Settings {
        backend: "tfs".into(),
        endpoints,
        connect_timeout: Duration::from_secs(1),
        resolve_interval: Duration::from_secs(5),
        health: HealthConfig::default(),
        retry: RetryConfig::default(),
        tls: None,
        server_name: None,
        resolver: system_resolver(),
    }
}

fn pool_with(settings: Settings) -> (EndpointPool, Arc<Script>) {
    let script = Arc::new(Script::default());
    let pool = EndpointPool::new(
        settings,
        Arc::new(ScriptedProbe(script.clone())),
        EndpointMetrics::unregistered(),
    )
    .unwrap();
    (pool, script)
}

fn pool(endpoints: &[&str]) -> (EndpointPool, Arc<Script>) {
    pool_with(settings(endpoints.iter().map(|e| url(e)).collect()))
}

/// One call for model `m`, answered by the script.
async fn call(pool: &EndpointPool, script: &Arc<Script>) -> Result<&'static str, CallError> {
    pool.call("m", Duration::from_secs(5), |_, _, endpoint| {
        let answer = script.answer(endpoint);
        async move { answer }
    })
    .await
}

fn taking_calls(pool: &EndpointPool) -> Vec<String> {
    pool.endpoints()
        .into_iter()
        .filter(|(_, up)| *up)
        .map(|(e, _)| e)
        .collect()
}

/// Of two endpoints, a call goes to the one with fewer calls in flight.
#[tokio::test(start_paused = true)]
async fn calls_go_to_the_less_busy_endpoint() {
    let (pool, script) = pool(&[A, B]);
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let busy = Arc::new(Mutex::new(String::new()));
    let busy_in = busy.clone();
    let mut held = Some(held);
    let pool = Arc::new(pool);
    let holder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.call("m", Duration::from_secs(60), |_, _, endpoint| {
                *busy_in.lock().unwrap() = endpoint.to_string();
                let held = held.take().unwrap();
                async move {
                    let _ = held.await;
                    Ok(())
                }
            })
            .await
        })
    };
    tokio::task::yield_now().await;
    while busy.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let busy = busy.lock().unwrap().clone();
    for _ in 0..20 {
        call(&pool, &script).await.unwrap();
    }
    assert_eq!(script.served(&busy), 0, "the busy endpoint got calls");
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
}

/// Calls spread over all endpoints when none is busier.
#[tokio::test(start_paused = true)]
async fn idle_endpoints_share_calls() {
    let (pool, script) = pool(&[A, B, C]);
    for _ in 0..300 {
        call(&pool, &script).await.unwrap();
    }
    for e in [A, B, C] {
        assert!(script.served(e) > 30, "{e} served {}", script.served(e));
    }
}

/// `failures_to_eject` (3) failed calls in a row eject an endpoint; two do not. Failed calls
/// are retried on the other endpoint, so no call fails.
#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_calls_fail_over() {
    let (pool, script) = pool(&[A, B]);
    script.fail_calls(A, Code::Unavailable);
    while script.served(A) < 2 {
        assert_eq!(call(&pool, &script).await.unwrap(), "answer");
    }
    assert_eq!(
        taking_calls(&pool).len(),
        2,
        "ejected after only 2 failures"
    );
    while script.served(A) < 3 {
        assert_eq!(call(&pool, &script).await.unwrap(), "answer");
    }
    assert_eq!(taking_calls(&pool), [B]);
    let before = script.served(A);
    for _ in 0..20 {
        call(&pool, &script).await.unwrap();
    }
    assert_eq!(script.served(A), before, "an ejected endpoint got calls");
}

/// An answer in between resets the count: failures must be consecutive.
#[tokio::test(start_paused = true)]
async fn an_answer_resets_the_failure_count() {
    let (pool, script) = pool(&[A]);
    for _ in 0..5 {
        script.fail_calls(A, Code::Unavailable);
        assert!(call(&pool, &script).await.is_err());
        assert!(call(&pool, &script).await.is_err());
        script.heal_calls(A);
        call(&pool, &script).await.unwrap();
    }
    assert_eq!(taking_calls(&pool), [A]);
}

/// Errors the server chose to send (INVALID_ARGUMENT, INTERNAL, NOT_FOUND) neither eject nor
/// retry: each call reaches one endpoint once.
#[tokio::test(start_paused = true)]
async fn server_errors_are_not_retried_and_do_not_eject() {
    let (pool, script) = pool(&[A, B]);
    for code in [
        Code::InvalidArgument,
        Code::Internal,
        Code::NotFound,
        Code::ResourceExhausted,
    ] {
        script.fail_calls(A, code);
        script.fail_calls(B, code);
        for _ in 0..5 {
            match call(&pool, &script).await {
                Err(CallError::Status { status, .. }) => assert_eq!(status.code(), code),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(script.served(A) + script.served(B), 20);
    assert_eq!(taking_calls(&pool).len(), 2);
}

/// UNAVAILABLE is retried once on another endpoint, not twice: with every endpoint failing,
/// a call costs two attempts.
#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_once() {
    let (pool, script) = pool(&[A, B, C]);
    for e in [A, B, C] {
        script.fail_calls(e, Code::Unavailable);
    }
    assert!(matches!(
        call(&pool, &script).await,
        Err(CallError::Status { .. })
    ));
    assert_eq!(script.served(A) + script.served(B) + script.served(C), 2);
}

/// Retries stay within the budget: at 0.2 with no allowance per second, the 5th call may
/// retry (0.2 × 5 = 1), the 10th the second time, the 15th the third; every other call's
/// retryable failure is returned as it is.
#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries() {
    let mut s = settings(vec![url(A), url(B)]);
    s.retry = RetryConfig {
        budget_ratio: 0.2,
        min_per_second: 0.0,
    };
    s.health.failures_to_eject = 1000;
    let (pool, script) = pool_with(s);
    script.fail_calls(A, Code::Unavailable);
    script.fail_calls(B, Code::Unavailable);
    let attempts = || script.served(A) + script.served(B);
    for n in 1..=15 {
        let before = attempts();
        assert!(call(&pool, &script).await.is_err());
        let expected = if n % 5 == 0 { 2 } else { 1 };
        assert_eq!(attempts() - before, expected, "call {n}");
    }
}

/// A zero budget turns failover off.
#[tokio::test(start_paused = true)]
async fn a_zero_budget_never_retries() {
    let mut s = settings(vec![url(A), url(B)]);
    s.retry = RetryConfig {
        budget_ratio: 0.0,
        min_per_second: 0.0,
    };
    let (pool, script) = pool_with(s);
    script.fail_calls(A, Code::Unavailable);
    script.fail_calls(B, Code::Unavailable);
    assert!(call(&pool, &script).await.is_err());
    assert_eq!(script.served(A) + script.served(B), 1);
}

/// No endpoint left: the call fails at once without an attempt, naming each endpoint.
#[tokio::test(start_paused = true)]
async fn all_ejected_fails_at_once_naming_each_endpoint() {
    let (pool, script) = pool(&[A, B]);
    script.fail_calls(A, Code::Unavailable);
    script.fail_calls(B, Code::Unavailable);
    while !taking_calls(&pool).is_empty() {
        let _ = call(&pool, &script).await;
    }
    let attempts = script.served(A) + script.served(B);
    let err = match call(&pool, &script).await {
        Err(CallError::NoEndpoint(why)) => why,
        other => panic!("{other:?}"),
    };
    assert_eq!(script.served(A) + script.served(B), attempts);
    assert!(
        err.starts_with("no healthy endpoint for model `m` ("),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{A} ejected after 3 failures (UNAVAILABLE: scripted)"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{B} ejected")), "{err}");
    assert_eq!(pool.readiness("m").unwrap_err(), err);
}

/// Ejected, an endpoint is checked when its ejection ends: 500 ms, then doubling while its
/// checks fail, capped at `max_ejection_ms`; the first check that passes re-admits it. So a
/// replica that comes back takes calls within `max_ejection_ms` (+ one check) of answering.
#[tokio::test(start_paused = true)]
async fn ejection_backs_off_and_a_passing_check_readmits() {
    let mut s = settings(vec![url(A), url(B)]);
    s.health.max_ejection_ms = 2000;
    s.health.interval_ms = 60_000;
    let (pool, script) = pool_with(s);
    pool.start();
    script.fail_calls(A, Code::Unavailable);
    script.check_finds(A, ProbeOutcome::Unreachable("refused".into()));
    while taking_calls(&pool).len() == 2 {
        call(&pool, &script).await.unwrap();
    }
    let ejected_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let checks: Vec<u128> = script
        .checks_of(A)
        .into_iter()
        .filter(|t| *t > ejected_at)
        .map(|t| (t - ejected_at).as_millis())
        .collect();
    // 500, +1000, +2000, +2000 (the cap).
    assert_eq!(checks, [500, 1500, 3500, 5500]);
    assert_eq!(taking_calls(&pool), [B]);
    // It comes back: the next check (at most max_ejection_ms away) re-admits it.
    script.heal_calls(A);
    script.check_finds(A, ProbeOutcome::Ready);
    let back = Instant::now();
    while taking_calls(&pool).len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        back.elapsed() <= Duration::from_millis(2000),
        "{:?}",
        back.elapsed()
    );
    let before = script.served(A);
    for _ in 0..50 {
        call(&pool, &script).await.unwrap();
    }
    assert!(script.served(A) > before, "re-admitted but got no calls");
}

/// A healthy endpoint is checked every `interval_ms`; checks that get no answer eject it
/// after `failures_to_eject` in a row, with no call needed.
#[tokio::test(start_paused = true)]
async fn failing_checks_eject_without_calls() {
    let (pool, script) = pool(&[A, B]);
    pool.start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    script.check_finds(A, ProbeOutcome::Unreachable("no answer".into()));
    let start = Instant::now();
    while taking_calls(&pool).len() == 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Checks at +2 s, +4 s, +6 s: the third ejects.
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_secs(5) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
}

/// An endpoint whose check finds the model not loaded gets no calls for it while another
/// serves it; when none does, calls go to any endpoint (its own NOT_FOUND reaches the
/// client) and readiness says why.
#[tokio::test(start_paused = true)]
async fn endpoints_without_the_model_are_avoided() {
    let (pool, script) = pool(&[A, B]);
    let _route = pool.register("m");
    pool.start();
    script.check_finds(
        A,
        ProbeOutcome::NotReady("no version AVAILABLE: version 1 LOADING".into()),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        call(&pool, &script).await.unwrap();
    }
    assert_eq!(script.served(A), 0);
    assert!(pool.readiness("m").is_ok());
    script.check_finds(B, ProbeOutcome::NotReady("NOT_FOUND: no such model".into()));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let why = pool.readiness("m").unwrap_err();
    assert!(
        why.contains(&format!(
            "{A} does not serve `m` (no version AVAILABLE: version 1 LOADING)"
        )),
        "{why}"
    );
    assert!(
        why.contains(&format!(
            "{B} does not serve `m` (NOT_FOUND: no such model)"
        )),
        "{why}"
    );
    call(&pool, &script).await.unwrap();
    // Another model isn't affected by `m`'s checks.
    assert!(pool.readiness("other").is_ok());
}

/// A model routed here is checked at once, not at the next interval.
#[tokio::test(start_paused = true)]
async fn a_routed_model_is_checked_at_once() {
    let (pool, script) = pool(&[A]);
    pool.start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = script.checks_of(A).len();
    let _route = pool.register("m");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(script.checks_of(A).len(), before + 1);
}

fn resolver(answers: Arc<Mutex<std::io::Result<Vec<SocketAddr>>>>) -> Resolver {
    Arc::new(move |_host, _port| {
        let answer = match &*answers.lock().unwrap() {
            Ok(addrs) => Ok(addrs.clone()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        Box::pin(std::future::ready(answer))
    })
}

fn addrs(list: &[&str]) -> std::io::Result<Vec<SocketAddr>> {
    Ok(list.iter().map(|a| a.parse().unwrap()).collect())
}

/// A `dns://` name is every address it resolves to; re-resolved, addresses that appear join
/// and those that vanish leave, while a call in flight on a vanished one still finishes.
#[tokio::test(start_paused = true)]
async fn dns_names_join_and_drain() {
    let answers = Arc::new(Mutex::new(addrs(&[A, B])));
    let mut s = settings(vec![EndpointSpec::Dns {
        host: "tfserving-headless.ml.svc.cluster.local".into(),
        port: 8500,
    }]);
    s.resolver = resolver(answers.clone());
    let (pool, script) = pool_with(s);
    let pool = Arc::new(pool);
    // The first call waits for the first resolution.
    call(&pool, &script).await.unwrap();
    assert_eq!(taking_calls(&pool), [A, B]);
    // A call on A that is in flight while A vanishes.
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let mut held = Some(held);
    let on_a = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.call("m", Duration::from_secs(60), |_, _, endpoint| {
                let endpoint = endpoint.to_string();
                let held = held.take();
                async move {
                    if endpoint == A {
                        let _ = held.unwrap().await;
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                }
            })
            .await
        })
    };
    *answers.lock().unwrap() = addrs(&[B, C]);
    pool.refresh().await;
    assert_eq!(taking_calls(&pool), [B, C]);
    let _ = release.send(());
    // Wherever it went, it finished (on A, after A left the set).
    on_a.await.unwrap().unwrap();
    for _ in 0..50 {
        call(&pool, &script).await.unwrap();
    }
    assert!(script.served(C) > 0);
}

/// The background task re-resolves every `resolve_interval_ms`.
#[tokio::test(start_paused = true)]
async fn dns_names_are_re_resolved_on_the_interval() {
    let answers = Arc::new(Mutex::new(addrs(&[A])));
    let mut s = settings(vec![EndpointSpec::Dns {
        host: "tfs".into(),
        port: 8500,
    }]);
    s.resolver = resolver(answers.clone());
    let (pool, _script) = pool_with(s);
    pool.start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(taking_calls(&pool), [A]);
    *answers.lock().unwrap() = addrs(&[A, B]);
    tokio::time::sleep(Duration::from_millis(4800)).await;
    assert_eq!(taking_calls(&pool), [A]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(taking_calls(&pool), [A, B]);
}

/// A name that stops resolving keeps its last addresses (a resolver hiccup must not empty
/// the fleet); one that resolves to nothing empties it, and the error says so.
#[tokio::test(start_paused = true)]
async fn dns_failures_keep_the_last_addresses() {
    let answers = Arc::new(Mutex::new(addrs(&[A])));
    let mut s = settings(vec![EndpointSpec::Dns {
        host: "tfs".into(),
        port: 8500,
    }]);
    s.resolver = resolver(answers.clone());
    let (pool, script) = pool_with(s);
    pool.refresh().await;
    *answers.lock().unwrap() = Err(std::io::Error::other("server misbehaving"));
    pool.refresh().await;
    assert_eq!(taking_calls(&pool), [A]);
    call(&pool, &script).await.unwrap();
    *answers.lock().unwrap() = addrs(&[]);
    pool.refresh().await;
    let why = pool.readiness("m").unwrap_err();
    assert_eq!(
        why,
        "no healthy endpoint for model `m` (dns://tfs:8500 resolved to no addresses)"
    );
    assert!(matches!(
        call(&pool, &script).await,
        Err(CallError::NoEndpoint(_))
    ));
}

/// A call that runs out of time is a timeout, not retried and not held against the endpoint.
#[tokio::test(start_paused = true)]
async fn a_slow_call_times_out_without_ejecting() {
    let (pool, _script) = pool(&[A, B]);
    for _ in 0..5 {
        let result: Result<(), CallError> = pool
            .call("m", Duration::from_millis(100), |_, _, _| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            })
            .await;
        assert!(
            matches!(result, Err(CallError::Timeout { .. })),
            "{result:?}"
        );
    }
    assert_eq!(taking_calls(&pool).len(), 2);
}

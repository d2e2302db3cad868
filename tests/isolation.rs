//! One model can't hurt another: a model whose plugin loops, bombs its memory, traps or
//! returns a huge body, driven at four times its capacity, leaves a well-behaved model's
//! requests answered (0 errors) and their latency where it was alone. The latency check is a
//! ratio against the good model's solo baseline measured in the same test, in interleaved
//! blocks, so a machine busy with other work slows both sides alike.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// The bad model's instance slots; it is driven by four times as many clients.
const BAD_SLOTS: usize = 2;
/// Good-model requests per block, and blocks of each kind (alone, beside the bad model),
/// interleaved so that whatever else the machine does falls on both alike.
const BLOCK: usize = 50;
const BLOCKS: usize = 8;
/// Measurements (each `BLOCKS` of both kinds) before the test gives up.
const ATTEMPTS: usize = 3;

/// The tests here run one at a time: each measures what the other would disturb (a looping
/// plugin is a busy core).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the bad model's clients ask for, in turn.
const BAD_BEHAVIOURS: [&str; 4] = ["loop", "grow", "trap", "post-huge-body"];

/// The models' share of the cores in a test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cores {
    /// `max_running_calls = 1`, a hard bound, so the test means the same on any machine.
    One,
    /// The default share: half the cores (one on a 2-core machine), which short calls may
    /// run past while the model's calls stay short.
    Default,
}

/// A good and a bad model on one fake backend; the connections spread over `workers` when
/// given.
async fn two_models_on(workers: Option<usize>, cores: Cores) -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let plugin = wasm("misbehave");
    // Both models get explicit slots. The bad model's deadline leaves a memory bomb time to
    // reach its cap (a 500) even on a machine busy with other work, where 100 ms was too
    // little.
    let running = match cores {
        Cores::One => "max_running_calls = 1\n",
        Cores::Default => "",
    };
    let good = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{plugin}\"\n[limits]\nmax_concurrent_calls = 4\n{running}",
    );
    let bad = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{plugin}\"\n[limits]\ntimeout_ms = 400\nmax_concurrent_calls = {BAD_SLOTS}\n{running}",
    );
    let mut gw = gateway();
    if let Some(n) = workers {
        gw = gw.workers(n);
    }
    let gw = gw
        .backend("tfs", &backend.url())
        .model("good", &good)
        .model("bad", &bad)
        .fixture_plugin("good", "misbehave")
        .fixture_plugin("bad", "misbehave")
        .start()
        .await
        .unwrap();
    (backend, gw)
}

/// `n` good requests one after another: their latencies, and the failures.
async fn good_requests(gw: &TestGateway, n: usize, latencies: &mut Vec<Duration>) -> Vec<String> {
    let mut errors = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let reply = gw.post("/v1/models/good:predict", "ok").await;
        latencies.push(started.elapsed());
        if reply.status != 200 || reply.body != "ok" {
            errors.push(format!("{} {}", reply.status, reply.text()));
        }
    }
    errors
}

fn quantile(latencies: &[Duration], q: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The bad model's clients, `4 × BAD_SLOTS` of them, each sending the behaviours in turn
/// while `on`, until `stop`. `busy` counts their requests in flight.
struct BadClients {
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    busy: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<(&'static str, u16), usize>>>,
}

impl BadClients {
    fn start(gw: &Arc<TestGateway>) -> BadClients {
        let on = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let tasks = (0..4 * BAD_SLOTS)
            .map(|client| {
                let (gw, on, stop, busy) = (gw.clone(), on.clone(), stop.clone(), busy.clone());
                tokio::spawn(async move {
                    let mut seen = BTreeMap::new();
                    let mut turn = client;
                    while !stop.load(Ordering::SeqCst) {
                        if !on.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                        let behaviour = BAD_BEHAVIOURS[turn % BAD_BEHAVIOURS.len()];
                        turn += 1;
                        busy.fetch_add(1, Ordering::SeqCst);
                        let reply = gw.post("/v1/models/bad:predict", behaviour).await;
                        busy.fetch_sub(1, Ordering::SeqCst);
                        *seen.entry((behaviour, reply.status.as_u16())).or_default() += 1;
                    }
                    seen
                })
            })
            .collect();
        BadClients {
            on,
            stop,
            busy,
            tasks,
        }
    }

    /// Starts sending and waits until the bad model's slots are taken and calls queue.
    async fn drive(&self) {
        self.on.store(true, Ordering::SeqCst);
        let busy = self.busy.clone();
        eventually(10, "the bad model over capacity", move || {
            let busy = busy.clone();
            async move { busy.load(Ordering::SeqCst) > BAD_SLOTS }
        })
        .await;
    }

    /// Stops sending and waits for the bad model's requests in flight to end.
    async fn pause(&self) {
        self.on.store(false, Ordering::SeqCst);
        let busy = self.busy.clone();
        eventually(10, "the bad model idle", move || {
            let busy = busy.clone();
            async move { busy.load(Ordering::SeqCst) == 0 }
        })
        .await;
    }

    async fn finish(self) -> BTreeMap<(&'static str, u16), usize> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = BTreeMap::new();
        for task in self.tasks {
            for (key, n) in task.await.unwrap() {
                *all.entry(key).or_default() += n;
            }
        }
        all
    }
}

/// A thread of this process busy on one core: what the bad model is allowed
/// (`max_running_calls = 1`), taken from the good model's solo baseline too. The machine's
/// other work and the kernel's per-session (autogroup) scheduling then weigh on both sides
/// alike: on a loaded 2-core machine, any thread of the process spinning raises the others'
/// tail latency many times over, whoever spins, and that is not what this test is about.
/// Without the model shares the bad model takes every core and the good p99 rises ×15–30
/// over this baseline; with them it stays near ×1.
struct Burner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Burner {
    fn start() -> Burner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        });
        Burner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The good model keeps 0 errors and its p99 within 2× of its p99 alone while the bad model
/// loops, exhausts its memory, traps and returns oversized bodies under 4× its capacity;
/// the bad model's own requests each fail alone (500/504), or are refused with 503 when
/// its slots stay busy — it never takes the good model's slots or cores. "Alone" is the good
/// model with nothing else in the gateway, beside one busy core (see [`Burner`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_model_leaves_a_good_one_alone() {
    misbehaving_beside_good(None, Cores::One).await;
}

/// The same on the default share, whose short calls may run past it: the bad model's
/// looping calls run long, which holds it to its share (a stretch per call in flight, once
/// every second, is all it gets past it), so the good model keeps the same bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_model_leaves_a_good_one_alone_on_the_default_share() {
    misbehaving_beside_good(None, Cores::Default).await;
}

/// The same with the connections on two per-core workers (`server.workers = 2`): still 0
/// errors and the bad model held to its share, but a good request whose worker is running
/// one of the bad model's calls waits for it to yield (an epoch tick) or finish (a host copy
/// of a huge output yields at none) instead of moving to an idle thread, so its p99 is
/// bounded looser: ×1.5 to ×5 were measured beside ×0.4 to ×1 without workers. A bad call
/// that held its worker through its whole deadline would make it ×40 or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_model_leaves_a_good_one_alone_on_workers() {
    misbehaving_beside_good(Some(2), Cores::One).await;
}

async fn misbehaving_beside_good(workers: Option<usize>, cores: Cores) {
    // How far the good model's p99 may rise beside the bad one (see the tests above).
    let bound = if workers.is_some() { 8.0 } else { 2.0 };
    let _serial = SERIAL.lock().await;
    let (_backend, gw) = two_models_on(workers, cores).await;
    let gw = Arc::new(gw);
    // Warm both models up (compiled code paged in, pool slots touched).
    let mut warm = Vec::new();
    good_requests(&gw, BLOCK, &mut warm).await;
    let bad = BadClients::start(&gw);
    let mut errors = Vec::new();
    let mut ratios = Vec::new();
    // Up to `ATTEMPTS` measurements, stopping at the first within the bound: a burst of
    // other work on the machine can spoil one; without the shares every one is ×15 or more.
    for attempt in 0..ATTEMPTS {
        let (alone, beside) = measure(&gw, &bad, &mut errors).await;
        let (p99_alone, p99_beside) = (quantile(&alone, 0.99), quantile(&beside, 0.99));
        let ratio = p99_beside.as_secs_f64() / p99_alone.as_secs_f64();
        eprintln!(
            "attempt {attempt}, {} good requests each: p99 alone {p99_alone:?}, beside the bad \
             model {p99_beside:?} (×{ratio:.2}); p50 {:?} → {:?}",
            alone.len(),
            quantile(&alone, 0.5),
            quantile(&beside, 0.5)
        );
        ratios.push(ratio);
        if ratio <= bound {
            break;
        }
    }
    bad.pause().await;
    if cores == Cores::Default {
        // Its looping calls ran long, so the bad model keeps to its share.
        let table = gw.gateway.routes().snapshot();
        let share = table.routes["bad"].pre.as_ref().unwrap().share();
        assert!(
            share.strict(),
            "the looping model still bursts past its share"
        );
    }
    let seen = bad.finish().await;
    eprintln!("bad model's answers (behaviour, status) → count: {seen:?}");
    assert!(
        errors.is_empty(),
        "the good model failed {} of {} requests beside the bad one: {:?}",
        errors.len(),
        ratios.len() * BLOCKS * BLOCK,
        &errors[..errors.len().min(5)]
    );
    // The bad model was really exercised: each behaviour failed as itself (a loop by its
    // deadline, the others as a 500), it was over capacity (503s), and it never answered
    // anything else.
    for (behaviour, status) in [
        ("loop", 504),
        ("grow", 500),
        ("trap", 500),
        ("post-huge-body", 500),
    ] {
        assert!(
            seen.get(&(behaviour, status)).copied().unwrap_or(0) > 0,
            "no {status} for {behaviour}: {seen:?}"
        );
    }
    assert!(
        seen.iter().any(|((_, status), _)| *status == 503),
        "the bad model was never over capacity: {seen:?}"
    );
    // A memory bomb or a huge body may also run out of time on a slow machine (504).
    let unexpected: Vec<_> = seen
        .keys()
        .filter(|(_, status)| ![500, 503, 504].contains(status))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(
        ratios.iter().any(|r| *r <= bound),
        "the good model's p99 rose beside the bad model to ×{ratios:.2?} of its p99 alone"
    );
}

/// `BLOCKS` blocks of good requests alone and as many beside the bad model, interleaved:
/// their latencies (alone, beside); failures beside the bad model go to `errors`.
async fn measure(
    gw: &TestGateway,
    bad: &BadClients,
    errors: &mut Vec<String>,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    for block in 0..BLOCKS {
        // Alternate which kind goes first, so neither always follows the other.
        for beside_now in [block % 2 == 1, block % 2 == 0] {
            if beside_now {
                bad.drive().await;
                errors.extend(good_requests(gw, BLOCK, &mut beside).await);
            } else {
                bad.pause().await;
                let burner = Burner::start();
                let alone_errors = good_requests(gw, BLOCK, &mut alone).await;
                drop(burner);
                assert!(alone_errors.is_empty(), "alone: {alone_errors:?}");
            }
        }
    }
    (alone, beside)
}

/// The other way of the bound: with its slot taken, a model's next call waits for it and
/// runs once it frees up (within the call's `timeout_ms` of waiting); a call that can't get
/// one in time is a 503 naming the limit, and the model serves again afterwards. The deadline
/// is two seconds so that on a loaded machine the second request still reaches the share
/// while the first loop holds the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_model_waits_then_refuses_with_503() {
    let _serial = SERIAL.lock().await;
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let toml = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n[limits]\ntimeout_ms = 2000\nmax_concurrent_calls = 1\nmax_running_calls = 1\n",
        wasm("misbehave")
    );
    let gw = Arc::new(
        gateway()
            .backend("tfs", &backend.url())
            .model("p", &toml)
            .fixture_plugin("p", "misbehave")
            .start()
            .await
            .unwrap(),
    );
    // (calls waiting for the model's slot, slots in use)
    let share_load = |want: (usize, u32)| {
        let gw = gw.clone();
        move || {
            let gw = gw.clone();
            async move {
                let table = gw.gateway.routes().snapshot();
                table.routes["p"].pre.as_ref().unwrap().share().load() == want
            }
        }
    };
    let post = |body: &'static str| {
        let gw = gw.clone();
        tokio::spawn(async move { gw.post("/v1/models/p:predict", body).await })
    };
    // The first loop holds the only slot for its whole deadline; the second waits for it and
    // then loops its own; an `ok` arriving behind them waits its deadline, gets nothing.
    let first = post("loop");
    eventually(5, "the first loop in the slot", share_load((0, 1))).await;
    // The second arrives well into the first's deadline, so its wait (as long as that
    // deadline) outlasts the first's run and teardown even on a busy machine.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = post("loop");
    eventually(5, "the second loop waiting", share_load((1, 1))).await;
    let admin = gw.admin_get("/admin/plugins", &[]).await.json();
    let p = &admin["models"]["p"];
    assert_eq!(p["limits"]["max_concurrent_calls"], 1, "{admin}");
    assert_eq!(p["calls"]["waiting"], 1, "{admin}");
    let refused = gw.post("/v1/models/p:predict", "ok").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.error().contains("limits.max_concurrent_calls"),
        "{}",
        refused.error()
    );
    assert_eq!(first.await.unwrap().status, 504);
    // 504, not 503: it waited, got the slot, ran its whole deadline.
    let second = second.await.unwrap();
    assert_eq!(second.status, 504, "{}", second.text());
    // Short calls take turns in the one slot: all served.
    let replies = futures::future::join_all((0..4).map(|_| post("ok"))).await;
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// A gateway with one model per `(name, extra model.toml lines)`, each on the `misbehave`
/// fixture.
async fn models(specs: &[(&str, &str)]) -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let mut builder = gateway().backend("tfs", &backend.url());
    for (name, extra) in specs {
        let toml = format!(
            "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n{extra}",
            wasm("misbehave")
        );
        builder = builder.model(name, &toml).fixture_plugin(name, "misbehave");
    }
    (backend, builder.start().await.unwrap())
}

/// What the model's plugin instance remembers (`recall`), after `stash:…` calls.
async fn recall(gw: &TestGateway, model: &str) -> String {
    let reply = gw
        .post(&format!("/v1/models/{model}:predict"), "recall")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

async fn stash(gw: &TestGateway, model: &str, word: &str) {
    let reply = gw
        .post(
            &format!("/v1/models/{model}:predict"),
            format!("stash:{word}"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// One file is the model's pre and post plugin, so one warm instance serves both calls of a
/// request: `max_calls = 4` is two requests.
const REUSED: &str =
    "[limits]\nmax_concurrent_calls = 2\nmax_running_calls = 1\n[reuse]\nmax_calls = 4\n";

/// Without `[reuse]` every call gets a fresh instance: a global a plugin sets is gone at the
/// next call. With it, the model's next calls see it, up to `max_calls` calls per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_is_a_per_model_opt_in_bounded_by_max_calls() {
    let _serial = SERIAL.lock().await;
    let (_b, gw) = models(&[
        (
            "fresh",
            "[limits]\nmax_concurrent_calls = 2\nmax_running_calls = 1\n",
        ),
        ("warm", REUSED),
    ])
    .await;
    stash(&gw, "fresh", "a").await;
    assert_eq!(
        recall(&gw, "fresh").await,
        "recalled:",
        "reuse is off by default"
    );
    // One instance serves `stash`'s pre (1) and post (2), `recall`'s pre (3) and post (4),
    // then is discarded.
    stash(&gw, "warm", "b").await;
    assert_eq!(recall(&gw, "warm").await, "recalled:b");
    assert_eq!(
        recall(&gw, "warm").await,
        "recalled:",
        "a fifth call: a fresh instance"
    );
    let admin = gw.admin_get("/admin/plugins", &[]).await.json();
    assert_eq!(admin["models"]["warm"]["reuse"]["max_calls"], 4, "{admin}");
    assert_eq!(
        admin["models"]["fresh"]["reuse"]["max_calls"],
        json_null(),
        "{admin}"
    );
    assert_eq!(
        admin["models"]["warm"]["calls"]["idle"], 1,
        "the third request's instance, which served its pre and post: {admin}"
    );
}

fn json_null() -> serde_json::Value {
    serde_json::Value::Null
}

/// Nothing crosses models: two models with reuse on, on the same plugin file, each see only
/// what their own instances kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_instances_never_serve_another_model() {
    let _serial = SERIAL.lock().await;
    let (_b, gw) = models(&[("a", REUSED), ("b", REUSED)]).await;
    stash(&gw, "a", "secret").await;
    assert_eq!(recall(&gw, "b").await, "recalled:");
    assert_eq!(recall(&gw, "a").await, "recalled:secret");
}

/// A trap, a deadline or a memory-cap hit discards the instance: the next call starts fresh
/// and is served normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_never_poisons_the_next() {
    let _serial = SERIAL.lock().await;
    let (_b, gw) = models(&[(
        "p",
        "[limits]\ntimeout_ms = 300\nmemory_mb = 16\nmax_concurrent_calls = 2\nmax_running_calls = 1\n[reuse]\nmax_calls = 100\n",
    )])
    .await;
    for (bad, status) in [("trap", 500), ("loop", 504), ("grow", 500)] {
        stash(&gw, "p", "before").await;
        assert_eq!(recall(&gw, "p").await, "recalled:before", "{bad}: reused");
        let reply = gw.post("/v1/models/p:predict", bad).await;
        assert_eq!(reply.status, status, "{bad}: {}", reply.text());
        assert_eq!(
            recall(&gw, "p").await,
            "recalled:",
            "after {bad}: a fresh instance"
        );
    }
}

/// Idle warm instances never make a call wait: with one slot, the instance kept after a
/// request's preprocess serves the same request's postprocess, and every request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_give_their_slots_to_waiting_calls() {
    let _serial = SERIAL.lock().await;
    let (_b, gw) = models(&[(
        "p",
        "[limits]\ntimeout_ms = 1000\nmax_concurrent_calls = 1\nmax_running_calls = 1\n[reuse]\nmax_calls = 100\n",
    )])
    .await;
    for _ in 0..5 {
        let reply = gw.post("/v1/models/p:predict", "ok").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// Under load warm instances are handed over, not thrown away: with 8 clients on 2 slots
/// every call finds the slots busy, and a call waiting for one takes the instance the call
/// before it kept. 200 requests (400 plugin calls) instantiate a handful of instances, not
/// one per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_are_handed_to_waiting_calls_under_load() {
    let _serial = SERIAL.lock().await;
    let (_b, gw) = models(&[(
        "p",
        "[limits]\ntimeout_ms = 5000\nmax_concurrent_calls = 2\nmax_running_calls = 1\n[reuse]\nmax_calls = 1000\n",
    )])
    .await;
    let gw = std::sync::Arc::new(gw);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let reply = gw.post("/v1/models/p:predict", "ok").await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let metrics = gw.admin_get("/metrics", &[]).await.text();
    let instantiated: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("infergate_plugin_instantiate_duration_seconds_count")
                && l.contains("model=\"p\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        (1..=16).contains(&instantiated),
        "400 calls instantiated {instantiated} instances\n{metrics}"
    );
}

/// Nor do they make another model wait: with a gateway pool of two instances, both held by a
/// reusing model's idle instances (its pre and post plugins are two loads of one file, so
/// each keeps an instance of its own), a second model's calls free them and are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_give_the_pool_to_other_models() {
    let _serial = SERIAL.lock().await;
    let backend = FakeBackend::new([identity()]).start().await.unwrap();
    let plugin = wasm("misbehave");
    let model = |plugins: &str, extra: &str| {
        format!(
            "backend = \"tfs\"\nmodel = \"m\"\n{plugins}\n[limits]\ntimeout_ms = 1000\nmax_concurrent_calls = 2\nmax_running_calls = 1\n{extra}",
        )
    };
    let gw = gateway()
        .backend("tfs", &backend.url())
        .plugins_config("max_instances = 2")
        .model(
            "warm",
            &model(
                &format!("pre = \"{plugin}\"\npost = \"{plugin}\""),
                "[reuse]\nmax_calls = 100\n",
            ),
        )
        .model("other", &model(&format!("plugin = \"{plugin}\""), ""))
        .fixture_plugin("warm", "misbehave")
        .fixture_plugin("other", "misbehave")
        .start()
        .await
        .unwrap();
    stash(&gw, "warm", "kept").await;
    let admin = gw.admin_get("/admin/plugins", &[]).await.json();
    assert_eq!(admin["models"]["warm"]["calls"]["idle"], 2, "{admin}");
    for _ in 0..3 {
        let reply = gw.post("/v1/models/other:predict", "ok").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let admin = gw.admin_get("/admin/plugins", &[]).await.json();
    assert_eq!(admin["models"]["warm"]["calls"]["idle"], 0, "{admin}");
    assert_eq!(
        recall(&gw, "warm").await,
        "recalled:",
        "its instances were discarded"
    );
}

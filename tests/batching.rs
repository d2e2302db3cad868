//! The batcher on a paused clock against the in-process fake: what triggers a batch, what may
//! share one, how answers are split back, and how it pushes back. Then 64 concurrent HTTP
//! clients through the whole gateway and gRPC.

mod support;

use std::sync::Arc;
use std::time::Duration;

use infergate::backend::{ModelTarget, VersionChoice};
use infergate::batch::{BatchError, Batcher, QUEUE_IDLE};
use infergate::config::BatchingConfig;
use infergate::metrics::ModelMetrics;
use infergate::tensor::NamedTensors;
use serde_json::json;
use support::*;

fn config(max_batch_size: usize, timeout_us: u64) -> BatchingConfig {
    BatchingConfig {
        max_batch_size,
        batch_timeout_us: timeout_us,
        ..BatchingConfig::default()
    }
}

/// `config`, but always waiting out the window, as while the backend is busy: for tests of
/// what happens to requests while they sit in a queue.
fn windowed(max_batch_size: usize, timeout_us: u64) -> BatchingConfig {
    BatchingConfig {
        dispatch_when_idle: false,
        ..config(max_batch_size, timeout_us)
    }
}

fn batcher(fake: &FakeBackend, config: BatchingConfig) -> Arc<Batcher> {
    let backend = Arc::new(fake.in_process(Duration::from_secs(30)));
    Arc::new(Batcher::new(
        "m",
        config,
        backend,
        Duration::from_secs(30),
        ModelMetrics::detached("m"),
    ))
}

fn target() -> ModelTarget {
    ModelTarget {
        name: "m".into(),
        version: VersionChoice::Latest,
        signature: "serving_default".into(),
    }
}

/// `rows` rows of width 2 whose values start at `start`: [[start, start+1], …].
fn rows(start: f32, rows: usize) -> NamedTensors {
    let values: Vec<f32> = (0..rows * 2).map(|i| start + i as f32).collect();
    vec![(
        "x".into(),
        Tensor::from_f32(vec![rows as i64, 2], &values).unwrap(),
    )]
}

fn y(outputs: &NamedTensors) -> Vec<f32> {
    outputs
        .iter()
        .find(|(n, _)| n == "y")
        .unwrap()
        .1
        .to_f32()
        .unwrap()
}

fn spawn_submit(
    b: &Arc<Batcher>,
    inputs: NamedTensors,
) -> tokio::task::JoinHandle<Result<NamedTensors, BatchError>> {
    let b = b.clone();
    tokio::spawn(async move { b.submit(target(), inputs).await })
}

/// Lets spawned tasks run (and queue) without moving the paused clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A full batch leaves at once, without waiting out the timeout.
#[tokio::test(start_paused = true)]
async fn size_trigger() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(&fake, config(4, 10_000_000));
    let started = tokio::time::Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|i| spawn_submit(&b, rows(i as f32 * 10.0, 1)))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let base = i as f32 * 10.0;
        assert_eq!(
            y(&h.await.unwrap().unwrap()),
            vec![base * 2.0, (base + 1.0) * 2.0]
        );
    }
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![4]
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A partial batch leaves when its oldest request has waited `batch_timeout_us`, not before
/// (with `dispatch_when_idle = false`, TF Serving's rule).
#[tokio::test(start_paused = true)]
async fn timeout_trigger() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(&fake, windowed(8, 5_000));
    let handles: Vec<_> = (0..3)
        .map(|i| spawn_submit(&b, rows(i as f32, 1)))
        .collect();
    settle().await;
    tokio::time::advance(Duration::from_micros(4_000)).await;
    settle().await;
    assert!(fake.calls().is_empty(), "left before the timeout");
    tokio::time::advance(Duration::from_micros(1_500)).await;
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![3]
    );
}

/// With no backend call in flight a request doesn't wait for company: it leaves at once,
/// together with whatever was queued beside it.
#[tokio::test(start_paused = true)]
async fn idle_backend_dispatches_at_once() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(&fake, config(8, 10_000_000));
    let started = tokio::time::Instant::now();
    let handles: Vec<_> = (0..3)
        .map(|i| spawn_submit(&b, rows(i as f32, 1)))
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "waited on an idle backend"
    );
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![3]
    );
}

/// While a call is in flight the window applies: requests arriving then are gathered for
/// `batch_timeout_us` into one batch instead of trickling out one by one.
#[tokio::test(start_paused = true)]
async fn busy_backend_gathers_for_the_window() {
    let fake = FakeBackend::new([doubler()]).cost(Duration::from_secs(1), Duration::ZERO);
    let b = batcher(&fake, config(8, 5_000));
    // Occupies one of the two backend slots for a second.
    let first = spawn_submit(&b, rows(100.0, 1));
    settle().await;
    assert_eq!(fake.calls().len(), 1, "the lone first request left at once");
    let started = tokio::time::Instant::now();
    let later: Vec<_> = (0..3)
        .map(|i| spawn_submit(&b, rows(i as f32, 1)))
        .collect();
    settle().await;
    tokio::time::advance(Duration::from_micros(4_000)).await;
    settle().await;
    assert_eq!(fake.calls().len(), 1, "left before the window closed");
    for h in later {
        h.await.unwrap().unwrap();
    }
    // Sent at the window's close (5 ms), answered a second later.
    assert!(started.elapsed() < Duration::from_millis(1_010));
    first.await.unwrap().unwrap();
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![1, 3]
    );
}

/// Requests whose inputs differ beyond dim 0 never share a batch.
#[tokio::test(start_paused = true)]
async fn mixed_shapes_batch_separately() {
    let model = FakeModel::new("m")
        .input("x", DType::F32, &[-1, -1])
        .compute(|inputs| Ok(inputs.clone()));
    let fake = FakeBackend::new([model]);
    let b = batcher(&fake, config(8, 1_000));
    let narrow = vec![(
        "x".into(),
        Tensor::from_f32(vec![1, 2], &[1.0, 2.0]).unwrap(),
    )];
    let wide = vec![(
        "x".into(),
        Tensor::from_f32(vec![1, 3], &[1.0, 2.0, 3.0]).unwrap(),
    )];
    let handles = vec![
        spawn_submit(&b, narrow.clone()),
        spawn_submit(&b, wide.clone()),
        spawn_submit(&b, narrow),
    ];
    let answers: Vec<_> = futures::future::join_all(handles)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(answers[1], wide);
    let mut sizes: Vec<usize> = fake.calls().iter().map(|c| c.rows).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 2]);
}

/// With allowed sizes, 3 rows go out as 4 (a real row repeated) and the padding is dropped.
#[tokio::test(start_paused = true)]
async fn allowed_batch_sizes_pad_and_unpad() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(
        &fake,
        BatchingConfig {
            allowed_batch_sizes: vec![2, 4, 8],
            ..config(8, 1_000)
        },
    );
    let handles = vec![
        spawn_submit(&b, rows(0.0, 1)),
        spawn_submit(&b, rows(10.0, 2)),
    ];
    let first = handles
        .into_iter()
        .map(|h| async { h.await.unwrap().unwrap() });
    let answers = futures::future::join_all(first).await;
    assert_eq!(y(&answers[0]), vec![0.0, 2.0]);
    assert_eq!(y(&answers[1]), vec![20.0, 22.0, 24.0, 26.0]);
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![4]
    );
}

/// Variable-length inputs are padded to the batch's longest with `pad_value`; each request
/// gets its rows back (with the padded width, as documented).
#[tokio::test(start_paused = true)]
async fn variable_length_padding() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let model = FakeModel::new("m")
        .input("x", DType::F32, &[-1, -1])
        .compute(move |inputs| {
            record.lock().unwrap().push(inputs[0].1.clone());
            Ok(inputs.clone())
        });
    let fake = FakeBackend::new([model]);
    let b = batcher(
        &fake,
        BatchingConfig {
            pad_variable_length: true,
            pad_value: -1.0,
            ..config(8, 1_000)
        },
    );
    let short = vec![("x".into(), Tensor::from_f32(vec![1, 1], &[5.0]).unwrap())];
    let long = vec![(
        "x".into(),
        Tensor::from_f32(vec![1, 3], &[1.0, 2.0, 3.0]).unwrap(),
    )];
    let (a, c) = tokio::join!(spawn_submit(&b, short), spawn_submit(&b, long));
    assert_eq!(
        a.unwrap().unwrap()[0].1.to_f32().unwrap(),
        vec![5.0, -1.0, -1.0]
    );
    assert_eq!(
        c.unwrap().unwrap()[0].1.to_f32().unwrap(),
        vec![1.0, 2.0, 3.0]
    );
    let batch = seen.lock().unwrap()[0].clone();
    assert_eq!(batch.shape(), &[2, 3]);
}

/// A request whose caller gave up leaves the queue before dispatch.
#[tokio::test(start_paused = true)]
async fn cancelled_requests_leave_the_queue() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(&fake, windowed(8, 5_000));
    let kept = spawn_submit(&b, rows(0.0, 1));
    let abandoned = spawn_submit(&b, rows(100.0, 2));
    settle().await;
    abandoned.abort();
    settle().await;
    tokio::time::advance(Duration::from_millis(6)).await;
    kept.await.unwrap().unwrap();
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![1]
    );
}

/// Past `max_enqueued` queued requests the next one is refused at once (→ 429).
#[tokio::test(start_paused = true)]
async fn full_queue_refuses_at_once() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(
        &fake,
        BatchingConfig {
            max_enqueued: 2,
            ..windowed(8, 50_000)
        },
    );
    let queued: Vec<_> = (0..2)
        .map(|i| spawn_submit(&b, rows(i as f32, 1)))
        .collect();
    settle().await;
    assert_eq!(b.queued(), 2);
    let refused = b.submit(target(), rows(9.0, 1)).await;
    assert!(
        matches!(refused, Err(BatchError::QueueFull { limit: 2, .. })),
        "{refused:?}"
    );
    tokio::time::advance(Duration::from_millis(60)).await;
    for h in queued {
        h.await.unwrap().unwrap();
    }
    assert_eq!(b.queued(), 0);
    b.submit(target(), rows(9.0, 1)).await.unwrap();
}

/// A backend error fails exactly the requests of that batch, each with the same error.
#[tokio::test(start_paused = true)]
async fn backend_error_fans_out_to_its_batch() {
    let model = FakeModel::new("m")
        .input("x", DType::F32, &[-1, 2])
        .compute(|inputs| {
            let x = inputs[0].1.to_f32().unwrap();
            if x.contains(&-1.0) {
                Err(tonic::Status::invalid_argument("poisoned row"))
            } else {
                Ok(inputs.clone())
            }
        });
    let fake = FakeBackend::new([model]);
    let b = batcher(&fake, config(2, 1_000));
    let poisoned_batch = vec![
        spawn_submit(&b, rows(-1.0, 1)),
        spawn_submit(&b, rows(5.0, 1)),
    ];
    for h in poisoned_batch {
        match h.await.unwrap() {
            Err(BatchError::Backend(e)) => assert!(e.message.contains("poisoned row")),
            other => panic!("{other:?}"),
        }
    }
    // The next batch is unaffected.
    b.submit(target(), rows(1.0, 1)).await.unwrap();
}

/// One request larger than a batch is refused (400), never split silently.
#[tokio::test(start_paused = true)]
async fn oversized_request_is_refused() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(&fake, config(4, 1_000));
    let err = b.submit(target(), rows(0.0, 5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::TooManyRows {
                rows: 5,
                limit: 4,
                ..
            }
        ),
        "{err:?}"
    );
}

/// An output whose dim 0 isn't the batch's rows fails the batch with a clear message.
#[tokio::test(start_paused = true)]
async fn non_row_outputs_fail_the_batch() {
    let model = FakeModel::new("m")
        .input("x", DType::F32, &[-1, 2])
        .compute(|_| {
            Ok(vec![(
                "total".into(),
                Tensor::from_f32(vec![1], &[1.0]).unwrap(),
            )])
        });
    let fake = FakeBackend::new([model]);
    let b = batcher(&fake, config(4, 1_000));
    let (a, c) = tokio::join!(
        spawn_submit(&b, rows(0.0, 1)),
        spawn_submit(&b, rows(0.0, 1))
    );
    for r in [a.unwrap(), c.unwrap()] {
        match r {
            Err(BatchError::BadOutputs(m)) => assert!(m.contains("output `total`"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

/// Batching off (`max_batch_size = 1`) takes the same path with batches of one.
#[tokio::test(start_paused = true)]
async fn batching_off_is_batches_of_one() {
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(&fake, config(1, 1_000));
    let handles: Vec<_> = (0..3)
        .map(|i| spawn_submit(&b, rows(i as f32, 1)))
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
}

/// 64 concurrent HTTP clients with distinct inputs reach the gRPC fake in a handful of calls,
/// and each gets exactly its own rows back.
#[tokio::test]
async fn sixty_four_clients_share_a_few_calls() {
    let fake = FakeBackend::new([doubler()]).cost(Duration::from_millis(20), Duration::ZERO);
    let backend = fake.clone().start().await.unwrap();
    let toml = "backend = \"tfs\"\n[batching]\nmax_batch_size = 64\nbatch_timeout_us = 20000\n";
    let gw = Arc::new(
        gateway()
            .backend("tfs", &backend.url())
            .model("m", toml)
            .start()
            .await
            .unwrap(),
    );
    // One request first so the signature is cached and every client below hits the batcher.
    assert_eq!(
        gw.post("/v1/models/m:predict", r#"{"instances": [[0, 0]]}"#)
            .await
            .status,
        200
    );
    let warm_calls = fake.calls().len();
    let clients = (0..64).map(|i| {
        let gw = gw.clone();
        async move {
            let body = json!({ "instances": [[i as f32, -(i as f32)]] }).to_string();
            let reply = gw.post("/v1/models/m:predict", body).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(
                reply.json(),
                json!({ "predictions": [[2.0 * i as f32, -2.0 * i as f32]] })
            );
        }
    });
    futures::future::join_all(clients).await;
    let calls = fake.calls().len() - warm_calls;
    assert!(calls <= 8, "64 clients took {calls} backend calls");
}

/// `x`, an f32 tensor of `shape` filled with ones.
fn ones(shape: &[i64]) -> NamedTensors {
    let n = shape.iter().product::<i64>() as usize;
    vec![(
        "x".into(),
        Tensor::from_f32(shape.to_vec(), &vec![1.0; n]).unwrap(),
    )]
}

/// A fake model `m` returning its rank-3 input `x` as it came.
fn rank3_identity() -> FakeModel {
    FakeModel::new("m")
        .input("x", DType::F32, &[-1, -1, -1])
        .compute(|inputs| Ok(inputs.clone()))
}

fn shapes(fake: &FakeBackend) -> Vec<usize> {
    fake.calls().iter().map(|c| c.rows).collect()
}

/// The abort of issue 14: `[1, 1, N]` and `[1, N, 1]` padded into one batch would be
/// `[2, N, N]` — N² elements (4 TiB here). The batcher sizes a batch before building it, so
/// the two go out in batches of their own and each gets its own tensor back.
#[tokio::test(start_paused = true)]
async fn padding_cannot_square_a_batch() {
    let n = 1 << 20;
    let fake = FakeBackend::new([rank3_identity()]);
    let b = batcher(
        &fake,
        BatchingConfig {
            pad_variable_length: true,
            ..windowed(8, 1_000)
        },
    );
    let (wide, tall) = tokio::join!(
        spawn_submit(&b, ones(&[1, 1, n])),
        spawn_submit(&b, ones(&[1, n, 1]))
    );
    assert_eq!(wide.unwrap().unwrap()[0].1.shape(), &[1, 1, n]);
    assert_eq!(tall.unwrap().unwrap()[0].1.shape(), &[1, n, 1]);
    assert_eq!(shapes(&fake), vec![1, 1]);
}

/// Sizes are counted with checked arithmetic: two empty tensors whose padded batch would
/// hold 2 × 2^62 × 2^62 elements (a `usize` overflow) are batched apart, not wrapped around
/// into a small allocation.
#[tokio::test(start_paused = true)]
async fn padded_size_overflow_is_caught() {
    let huge = 1i64 << 62;
    let fake = FakeBackend::new([rank3_identity()]);
    let b = batcher(
        &fake,
        BatchingConfig {
            pad_variable_length: true,
            ..windowed(8, 1_000)
        },
    );
    let (a, c) = tokio::join!(
        spawn_submit(&b, ones(&[1, huge, 0])),
        spawn_submit(&b, ones(&[1, 0, huge]))
    );
    assert_eq!(a.unwrap().unwrap()[0].1.shape(), &[1, huge, 0]);
    assert_eq!(c.unwrap().unwrap()[0].1.shape(), &[1, 0, huge]);
    assert_eq!(shapes(&fake), vec![1, 1]);
}

/// `max_batch_bytes` both ways. Alone: a request of exactly the limit is served, one element
/// more is refused (400) naming the key; rows padded up to an allowed batch size count.
/// Together: two requests that fit the limit side by side share a batch, and two that don't
/// go in two.
#[tokio::test(start_paused = true)]
async fn batch_bytes_bound_both_ways() {
    let fake = FakeBackend::new([identity()]);
    let limited = |max_batch_bytes| BatchingConfig {
        max_batch_bytes,
        ..windowed(8, 1_000)
    };
    let b = batcher(&fake, limited(32));
    b.submit(target(), ones(&[1, 8])).await.unwrap();
    let err = b.submit(target(), ones(&[1, 9])).await.unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::TooLarge {
                bytes: Some(36),
                limit: 32,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("batching.max_batch_bytes"),
        "{err}"
    );

    let padded = batcher(
        &fake,
        BatchingConfig {
            allowed_batch_sizes: vec![4, 8],
            ..limited(31)
        },
    );
    // 8 bytes, but sent as 4 rows: 32.
    let err = padded.submit(target(), ones(&[1, 2])).await.unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::TooLarge {
                bytes: Some(32),
                ..
            }
        ),
        "{err:?}"
    );

    let calls = fake.calls().len();
    let (a, c) = tokio::join!(
        spawn_submit(&b, ones(&[1, 4])),
        spawn_submit(&b, ones(&[1, 4]))
    );
    a.unwrap().unwrap();
    c.unwrap().unwrap();
    assert_eq!(shapes(&fake)[calls..], [2], "16 + 16 bytes fit 32");

    let tight = batcher(&fake, limited(31));
    let (a, c) = tokio::join!(
        spawn_submit(&tight, ones(&[1, 4])),
        spawn_submit(&tight, ones(&[1, 4]))
    );
    a.unwrap().unwrap();
    c.unwrap().unwrap();
    assert_eq!(
        shapes(&fake)[calls + 1..],
        [1, 1],
        "16 + 16 bytes don't fit 31"
    );
}

/// A queue with no request for `QUEUE_IDLE` closes and its task ends (clients choose the
/// keys, so queues can't live as long as the route); the next request opens a new one.
#[tokio::test(start_paused = true)]
async fn idle_queues_close() {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let fake = FakeBackend::new([doubler()]);
    let b = batcher(&fake, config(8, 1_000));
    let before = tasks();
    b.submit(target(), rows(0.0, 1)).await.unwrap();
    settle().await;
    assert_eq!((b.queue_count(), tasks()), (1, before + 1));
    tokio::time::advance(QUEUE_IDLE - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(
        b.queue_count(),
        1,
        "closed before it was idle for QUEUE_IDLE"
    );
    tokio::time::advance(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!((b.queue_count(), tasks()), (0, before));
    assert_eq!(
        y(&b.submit(target(), rows(1.0, 1)).await.unwrap()),
        [2.0, 4.0]
    );
    assert_eq!(b.queue_count(), 1);
}

/// `max_queues` both ways: with room, three shapes wait in three queues for their window;
/// with two allowed, the third shape doesn't open a queue but goes out at once on its own
/// (and is answered), and the two queues still batch.
#[tokio::test(start_paused = true)]
async fn queues_are_capped_per_model() {
    for (max_queues, sent_at_once) in [(3, 0), (2, 1)] {
        let fake = FakeBackend::new([identity()]);
        let b = batcher(
            &fake,
            BatchingConfig {
                max_queues,
                ..windowed(8, 5_000)
            },
        );
        let handles: Vec<_> = (1..=3).map(|w| spawn_submit(&b, ones(&[1, w]))).collect();
        settle().await;
        assert_eq!(b.queue_count(), 3.min(max_queues));
        assert_eq!(
            fake.calls().len(),
            sent_at_once,
            "max_queues = {max_queues}"
        );
        for (w, h) in (1..=3).zip(handles) {
            assert_eq!(h.await.unwrap().unwrap()[0].1.shape(), &[1, w]);
        }
        assert_eq!(fake.calls().len(), 3);
    }
}

//! Connections spread over `server.workers`: each worker keeps its connections, requests of
//! different workers still share batches and each gets exactly its own rows back, and a
//! drain waits for the requests running on every worker.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::*;

/// `y = 2x` over `x: f32 [-1, 2]`, remembering the first column of every batch it was sent.
fn recording_doubler(batches: Arc<Mutex<Vec<Vec<f32>>>>) -> FakeModel {
    FakeModel::new("m")
        .input("x", DType::F32, &[-1, 2])
        .output("y", DType::F32, &[-1, 2])
        .compute(move |inputs| {
            let x = inputs[0].1.to_f32().expect("f32");
            batches
                .lock()
                .unwrap()
                .push(x.chunks(2).map(|row| row[0]).collect());
            let y: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
            Ok(vec![(
                "y".into(),
                Tensor::from_f32(inputs[0].1.shape().to_vec(), &y).expect("shape"),
            )])
        })
}

/// A fake backend serving `model`, each call costing `per_call`, and a gateway on two workers
/// with the one model `m` of `model_toml` in front of it.
async fn on_two_workers(
    model: FakeModel,
    per_call: Duration,
    model_toml: &str,
) -> (FakeServer, TestGateway) {
    let backend = FakeBackend::new([model])
        .cost(per_call, Duration::ZERO)
        .start()
        .await
        .unwrap();
    let gw = gateway()
        .workers(2)
        .backend("tfs", &backend.url())
        .model("m", model_toml)
        .start()
        .await
        .unwrap();
    (backend, gw)
}

/// A keep-alive HTTP/1 connection of its own to `url`.
async fn connect(url: &str) -> SendRequest<Full<Bytes>> {
    let addr = url.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

async fn predict(sender: &mut SendRequest<Full<Bytes>>, row: [f32; 2]) -> serde_json::Value {
    let body = json!({ "instances": [row] }).to_string();
    let request = hyper::Request::post("/v1/models/m:predict")
        .header("host", "gateway")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&body).expect("JSON")
}

/// Polls until the workers hold `want` connections each (accepting is asynchronous).
async fn await_connections(gw: &TestGateway, want: &[usize]) {
    let workers = gw.workers.as_ref().expect("started with workers");
    for _ in 0..500 {
        if workers.connections() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "connections per worker: {:?}, want {want:?}",
        workers.connections()
    );
}

/// Eight connections go four to each worker (a new one to the least loaded); their requests
/// are batched together across the two workers, and every request gets back its own rows.
#[tokio::test]
async fn connections_spread_and_batch_across_workers() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let (_backend, gw) = on_two_workers(
        recording_doubler(batches.clone()),
        Duration::from_millis(20),
        // Every batch waits out its window (50 ms), one at a time: the requests the eight
        // connections send together share one, whichever worker they came through.
        "backend = \"tfs\"\n[batching]\nmax_batch_size = 64\nbatch_timeout_us = 50000\n\
         dispatch_when_idle = false\nmax_concurrent_batches = 1\n",
    )
    .await;
    // One at a time, so each goes to the worker with fewer: 0, 1, 0, 1, …
    let mut senders = Vec::new();
    for i in 0..8usize {
        senders.push(connect(&gw.url).await);
        await_connections(&gw, &[i / 2 + 1, i.div_ceil(2)]).await;
    }
    let mut clients = Vec::new();
    for (connection, mut sender) in senders.into_iter().enumerate() {
        clients.push(tokio::spawn(async move {
            for request in 0..5 {
                let row = [connection as f32, request as f32];
                let answer = predict(&mut sender, row).await;
                assert_eq!(
                    answer,
                    json!({ "predictions": [[row[0] * 2.0, row[1] * 2.0]] }),
                    "connection {connection}, request {request}"
                );
            }
            sender
        }));
    }
    let mut senders = Vec::new();
    for client in clients {
        senders.push(client.await.expect("client"));
    }
    // Connection i is on worker i % 2: some batch held requests of both.
    let batches = batches.lock().unwrap().clone();
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 40);
    assert!(
        batches.iter().any(|rows| {
            let on = |worker: usize| rows.iter().any(|&c| c as usize % 2 == worker);
            on(0) && on(1)
        }),
        "no batch mixed the workers' requests: {batches:?}"
    );
    assert!(batches.len() < 40, "nothing was batched: {batches:?}");
    drop(senders);
    await_connections(&gw, &[0, 0]).await;
    gw.shutdown().await;
}

/// A drain waits for a request running on the other worker, and it is answered.
#[tokio::test]
async fn drain_waits_for_requests_on_every_worker() {
    let (_backend, gw) =
        on_two_workers(doubler(), Duration::from_millis(300), "backend = \"tfs\"\n").await;
    let mut first = connect(&gw.url).await;
    await_connections(&gw, &[1, 0]).await;
    let mut second = connect(&gw.url).await;
    await_connections(&gw, &[1, 1]).await;
    let a = tokio::spawn(async move { predict(&mut first, [1.0, 2.0]).await });
    let b = tokio::spawn(async move { predict(&mut second, [3.0, 4.0]).await });
    // Both requests are in the backend before the drain starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = gw.url.clone();
    gw.shutdown().await;
    assert_eq!(a.await.unwrap(), json!({ "predictions": [[2.0, 4.0]] }));
    assert_eq!(b.await.unwrap(), json!({ "predictions": [[6.0, 8.0]] }));
    let refused = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await;
    assert!(refused.is_err(), "still accepting after the drain");
}

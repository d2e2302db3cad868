//! Graceful shutdown of a real `infergate serve` process: on SIGTERM it stops accepting,
//! answers every request it had accepted (including those still waiting in a batch queue),
//! and exits 0.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::json;
use support::*;

/// A running gateway process and the addresses it printed.
struct Served {
    child: Child,
    url: String,
    admin_url: String,
}

fn serve(config: &std::path::Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_infergate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut admin_url = None;
    while url.is_none() || admin_url.is_none() {
        let line = lines
            .next()
            .expect("gateway exited before listening")
            .unwrap();
        if let Some(u) = line.strip_prefix("infergate listening on ") {
            url = Some(u.to_string());
        } else if let Some(u) = line.strip_prefix("infergate admin on ") {
            admin_url = Some(u.to_string());
        }
    }
    Served {
        child,
        url: url.unwrap(),
        admin_url: admin_url.unwrap(),
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Twelve requests are accepted and sit in the batch queue (a 300 ms window, an idle-send
/// turned off) when SIGTERM arrives. Each still gets its own answer, new connections are
/// refused, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_every_accepted_request() {
    let fake = FakeBackend::new([doubler()]).cost(Duration::from_millis(200), Duration::ZERO);
    let backend = fake.clone().start().await.unwrap();
    let (_dir, config) = gateway()
        .backend("tfs", &backend.url())
        .server_config("drain_timeout_ms = 10000")
        .model(
            "m",
            "backend = \"tfs\"\n[batching]\nmax_batch_size = 64\nbatch_timeout_us = 300000\n\
             dispatch_when_idle = false\n",
        )
        .write();
    let mut served = serve(&config);

    let clients: Vec<_> = (0..12)
        .map(|i| {
            let url = format!("{}/v1/models/m:predict", served.url);
            tokio::spawn(async move {
                let body = json!({"instances": [[i, 1]]}).to_string();
                send(Method::POST, &url, Bytes::from(body), &[]).await
            })
        })
        .collect();
    // Every request is inside the gateway, waiting for its batch, before the signal.
    let metrics = format!("{}/metrics", served.admin_url);
    eventually(10, "12 requests queued", || {
        let metrics = metrics.clone();
        async move {
            let scrape = send(Method::GET, &metrics, Bytes::new(), &[]).await.text();
            scrape.contains("infergate_queue_depth{model=\"m\"} 12")
        }
    })
    .await;
    sigterm(&served.child);

    // Stops accepting: a new connection is refused while the accepted ones drain.
    let addr = served.url.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::net::TcpStream::connect(&addr).await {
            Err(_) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(_) => panic!("still accepting connections 2 s after SIGTERM"),
        }
    }

    for (i, client) in clients.into_iter().enumerate() {
        let reply = client.await.unwrap();
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(
            reply.json(),
            json!({"predictions": [[2.0 * i as f64, 2.0]]}),
            "request {i}"
        );
    }
    assert_eq!(
        fake.calls().iter().map(|c| c.rows).collect::<Vec<_>>(),
        vec![12],
        "the queued batch was sent whole"
    );
    let status = tokio::task::spawn_blocking(move || served.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

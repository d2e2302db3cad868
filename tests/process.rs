//! A real `infergate serve` process: graceful shutdown (on SIGTERM it stops accepting,
//! answers every request it had accepted, including those still waiting in a batch queue, and
//! exits 0) and what it logs (JSON lines carrying the request id, model and stage timings).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::json;
use support::*;

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
    let mut served = serve_process(&config, &[], std::process::Stdio::null());

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
                tokio::time::sleep(Duration::from_millis(10)).await;
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

/// With `--log-json` every line is a JSON object; a request's plugin log lines carry its model
/// and request id, and its access line carries the id, model and stage timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_id_model_and_stages() {
    let fake = FakeBackend::new([identity()]);
    let backend = fake.clone().start().await.unwrap();
    let plugin = format!(
        "backend = \"tfs\"\nmodel = \"m\"\nplugin = \"{}\"\n",
        wasm("misbehave")
    );
    let (dir, config) = gateway()
        .backend("tfs", &backend.url())
        .model("mb", &plugin)
        .fixture_plugin("mb", "misbehave")
        .write();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut served = serve_process(&config, &["--log-json"], log.into());
    let reply = send(
        Method::POST,
        &format!("{}/v1/models/mb:predict", served.url),
        Bytes::from_static(b"log"),
        &[("x-request-id", "trace-me-42")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["x-request-id"], "trace-me-42");
    sigterm(&served.child);
    let status = tokio::task::spawn_blocking(move || served.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let plugin_line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "plugin: misbehave: log at info")
        .unwrap_or_else(|| panic!("no plugin log line in:\n{text}"));
    assert_eq!(plugin_line["fields"]["model"], "mb", "{plugin_line}");
    assert_eq!(
        plugin_line["fields"]["request_id"], "trace-me-42",
        "{plugin_line}"
    );
    let access = lines
        .iter()
        .find(|l| l["target"] == "infergate::access")
        .unwrap_or_else(|| panic!("no access line in:\n{text}"));
    assert_eq!(access["fields"]["status"], 200, "{access}");
    let span = &access["span"];
    assert_eq!(span["id"], "trace-me-42", "{access}");
    assert_eq!(span["model"], "mb", "{access}");
    for stage in ["pre_us", "queue_us", "backend_us", "post_us"] {
        assert!(span[stage].is_u64(), "{stage} missing: {access}");
    }
    assert_eq!(span["batch_rows"], 1, "{access}");
}

/// With the default log filter, a log written to a file is plain text (no terminal colour
/// codes) and carries the gateway's own events, not its dependencies' chatter: removing a
/// model folder logs `removed`, not one `notify::inotify` line per dropped watch.
#[tokio::test]
async fn default_logs_are_plain_and_quiet() {
    let toml = format!("backend = \"tfs\"\nplugin = \"{}\"\n", wasm("echo"));
    let (dir, config) = gateway()
        .backend("tfs", "http://127.0.0.1:1")
        .plugins_config("debounce_ms = 50")
        .model("keep", &toml)
        .fixture_plugin("keep", "echo")
        .model("gone", &toml)
        .fixture_plugin("gone", "echo")
        .write();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut served = serve_process_logging(&config, &[], log.into(), None);
    std::fs::remove_dir_all(dir.path().join("plugins/gone")).unwrap();
    let models = format!("{}/v1/models", served.url);
    eventually(10, "the removed folder's route gone", || {
        let models = models.clone();
        async move {
            let list = send(Method::GET, &models, Bytes::new(), &[]).await.json();
            list["models"].as_array().is_some_and(|m| m.len() == 1)
        }
    })
    .await;
    sigterm(&served.child);
    let status = tokio::task::spawn_blocking(move || served.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("removed"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
    assert!(
        !text.contains("notify"),
        "dependency chatter at the default level: {text}"
    );
}

/// SIGTERM or SIGINT sent the moment the gateway announces its port (a supervisor that
/// stops it at once) drains and exits 0: the handlers are in place before the line is
/// printed, so the default disposition never kills it. Three rounds of each signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_right_after_listening_exits_cleanly() {
    let fake = FakeBackend::new([doubler()]);
    let backend = fake.clone().start().await.unwrap();
    let (_dir, config) = gateway().backend("tfs", &backend.url()).write();
    for signal in ["-TERM", "-INT", "-TERM", "-INT", "-TERM", "-INT"] {
        let mut served = serve_process(&config, &[], std::process::Stdio::null());
        let status = std::process::Command::new("kill")
            .args([signal, &served.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = tokio::task::spawn_blocking(move || served.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{signal}: exit status {status:?}");
    }
}

//! The connection layer under abusive clients, on real sockets: header and body timeouts
//! (slow loris, a short body), idle connections closed, the connection cap (shedding the
//! longest-idle connection, refusing when all are busy, and a real process under a small
//! descriptor limit), the 413 answer read by a client that writes its whole body first,
//! HTTP/2 streams beyond the limit refused while the rest are answered, the drain timeout's
//! 503s, and path segments over the length limit. Each bound is checked both ways.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fake backend serving the doubler `m`, each call taking `cost`.
async fn backend(cost: Duration) -> FakeServer {
    FakeBackend::new([doubler()])
        .cost(cost, Duration::ZERO)
        .start()
        .await
        .unwrap()
}

async fn gateway_with(server: &str, backend: &FakeServer) -> TestGateway {
    gateway()
        .backend("tfs", &backend.url())
        .server_config(server)
        .model("m", "backend = \"tfs\"\n[batching]\nmax_batch_size = 1\n")
        .start()
        .await
        .unwrap()
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes (or resets) the connection, for at most `secs`; returns what
/// arrived, or `None` if the connection was still open then.
async fn read_until_closed(stream: &mut TcpStream, secs: u64) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(secs), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

const PREDICT_HEAD: &str =
    "POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";

/// A client that trickles its headers is cut off after `header_timeout_ms`, though the idle
/// timeout is far away; one that sends its headers in pieces within the timeout is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_both_ways() {
    let backend = backend(Duration::ZERO).await;
    let gw = gateway_with(
        "header_timeout_ms = 300\nidle_timeout_ms = 600000",
        &backend,
    )
    .await;
    let mut slow = TcpStream::connect(addr(&gw.url)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: a")
        .await
        .unwrap();
    let closed = read_until_closed(&mut slow, 20).await;
    assert!(
        closed.is_some(),
        "a half-sent header block was held past header_timeout_ms"
    );

    let gw2 = gateway_with("header_timeout_ms = 5000", &backend).await;
    let mut pieces = TcpStream::connect(addr(&gw2.url)).await.unwrap();
    pieces
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    pieces
        .write_all(b"host: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut pieces, 20)
        .await
        .expect("closed after the answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// A Content-Length longer than the body sent is answered 408 after `body_timeout_ms`, and
/// the connection closed; a body that arrives in pieces within the timeout is predicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_timeout_both_ways() {
    let backend = backend(Duration::ZERO).await;
    let gw = gateway_with("body_timeout_ms = 300", &backend).await;
    let mut short = TcpStream::connect(addr(&gw.url)).await.unwrap();
    short
        .write_all(format!("{PREDICT_HEAD}content-length: 100\r\n\r\n{{\"instances\"").as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut short, 20)
        .await
        .expect("closed after the 408");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("server.body_timeout_ms"), "{text}");

    let gw2 = gateway_with("body_timeout_ms = 5000", &backend).await;
    let body = json!({"instances": [[1.0, 2.0]]}).to_string();
    let (first, rest) = body.split_at(10);
    let mut pieces = TcpStream::connect(addr(&gw2.url)).await.unwrap();
    pieces
        .write_all(
            format!(
                "{PREDICT_HEAD}connection: close\r\ncontent-length: {}\r\n\r\n{first}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    pieces.write_all(rest.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut pieces, 20)
        .await
        .expect("closed after the answer");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("[2.0,4.0]"), "{text}");
}

/// A connection that never sends a byte is closed after `idle_timeout_ms`; a keep-alive
/// connection used again before it passes serves both requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_both_ways() {
    let backend = backend(Duration::ZERO).await;
    let gw = gateway_with("idle_timeout_ms = 300", &backend).await;
    let mut silent = TcpStream::connect(addr(&gw.url)).await.unwrap();
    assert!(
        read_until_closed(&mut silent, 20).await.is_some(),
        "a silent connection outlived idle_timeout_ms"
    );
    let metrics = gw.get("/metrics").await.text();
    assert!(
        metrics
            .contains("infergate_connections_closed_total{listener=\"public\",reason=\"idle\"} 1"),
        "{metrics}"
    );

    let gw2 = gateway_with("idle_timeout_ms = 5000", &backend).await;
    let mut kept = TcpStream::connect(addr(&gw2.url)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut kept, 20)
        .await
        .expect("closed after the answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "the kept-alive connection was closed"
    );
}

/// At `max_connections`, a new client is served by closing the connection idle the longest
/// (here silent ones, oldest first); with every connection busy a new one is refused, and
/// accepted again once one is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_sheds_idle_then_refuses() {
    let backend = backend(Duration::from_millis(1500)).await;
    let gw = gateway_with("max_connections = 3", &backend).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr(&gw.url)).await.unwrap());
        // Distinct idle-since times, so "the longest idle" is well defined.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = gw.get("/healthz").await;
    assert_eq!(
        reply.status, 200,
        "a new client was locked out by silent connections"
    );
    assert!(
        read_until_closed(&mut silent[0], 20).await.is_some(),
        "the oldest idle connection was not the one shed"
    );
    // Each new client sheds one more idle connection; then all three slots are busy.
    let busy: Vec<_> = (0..3)
        .map(|i| {
            let url = format!("{}/v1/models/m:predict", gw.url);
            tokio::spawn(async move {
                let body = json!({"instances": [[i, 1]]}).to_string();
                send(Method::POST, &url, Bytes::from(body), &[]).await
            })
        })
        .collect();
    let metrics_url = format!("{}/metrics", gw.admin_url);
    eventually(10, "3 predicts in flight", || {
        let url = metrics_url.clone();
        async move {
            let text = send(Method::GET, &url, Bytes::new(), &[]).await.text();
            text.contains("infergate_requests_in_flight{model=\"m\"} 3")
        }
    })
    .await;
    let mut refused = TcpStream::connect(addr(&gw.url)).await.unwrap();
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap_or(());
    let got = read_until_closed(&mut refused, 20)
        .await
        .expect("refused connection closed");
    assert!(
        got.is_empty(),
        "answered beyond the cap: {}",
        String::from_utf8_lossy(&got)
    );
    for reply in busy {
        assert_eq!(reply.await.unwrap().status, 200);
    }
    let after = gw.get("/healthz").await;
    assert_eq!(
        after.status, 200,
        "not accepting again once connections were free"
    );
    let metrics = gw.admin_get("/metrics", &[]).await.text();
    assert!(
        metrics.contains(
            "infergate_connections_closed_total{listener=\"public\",reason=\"refused\"} 1"
        ),
        "{metrics}"
    );
}

/// A real process under RLIMIT_NOFILE 512 (so a default cap of 256 connections): 612 silent
/// connections (more than the descriptor limit) don't lock out new clients — each sheds an
/// idle one — and accept errors, if any, are logged a handful of times, not once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_limit_process_keeps_serving() {
    // This test process needs a descriptor per silent connection: 612 fit the common
    // default of 1024.
    let (dir, config) = gateway().write();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("bash")
        .args(["-c", "ulimit -n 512 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_infergate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // Both address lines are read, and the pipe kept open: the gateway prints to stdout.
    use std::io::BufRead;
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    loop {
        let line = stdout.next().expect("gateway exited").unwrap();
        if let Some(u) = line.strip_prefix("infergate listening on ") {
            url = Some(u.to_string());
        } else if line.starts_with("infergate admin on ") {
            break;
        }
    }
    let url = url.expect("no public address printed");
    let mut silent = Vec::new();
    for _ in 0..612 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr(&url))).await {
            Ok(Ok(s)) => silent.push(s),
            _ => break,
        }
    }
    let mut answered = 0;
    let mut failures = Vec::new();
    for _ in 0..20 {
        match healthz(&addr(&url)).await {
            Ok(()) => answered += 1,
            Err(e) => failures.push(e),
        }
    }
    sigterm(&child);
    let _ = child.wait();
    drop((silent, stdout));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let accept_lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert_eq!(
        answered, 20,
        "health checks answered beside 612 silent connections: {failures:?}\n{log}"
    );
    assert!(
        accept_lines <= 3,
        "{accept_lines} accept-failure lines:\n{log}"
    );
}

/// One `GET /healthz` on a new connection, within 5 s.
async fn healthz(addr: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await {
        Err(_) => Err("no answer in 5 s".into()),
        Ok(Err(e)) => Err(format!(
            "read: {e} after {:?}",
            String::from_utf8_lossy(&got)
        )),
        Ok(Ok(_)) if got.starts_with(b"HTTP/1.1 200") => Ok(()),
        Ok(Ok(_)) => Err(format!("answer: {}", String::from_utf8_lossy(&got))),
    }
}

/// A client that writes its whole over-limit body before reading (as most HTTP libraries
/// do) gets every write through and then reads the 413: the gateway drains what it sends
/// after answering instead of resetting the connection. A body within the limit is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_body_gets_413_not_broken_pipe() {
    let backend = backend(Duration::ZERO).await;
    let gw = gateway()
        .backend("tfs", &backend.url())
        .max_body_bytes(1024)
        .model("m", "backend = \"tfs\"\n")
        .start()
        .await
        .unwrap();
    for framing in ["content-length: 4194304", "transfer-encoding: chunked"] {
        let mut stream = TcpStream::connect(addr(&gw.url)).await.unwrap();
        stream
            .write_all(format!("{PREDICT_HEAD}{framing}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let chunk = if framing.starts_with("transfer") {
            let mut c = format!("{:x}\r\n", 65536).into_bytes();
            c.extend(std::iter::repeat_n(b' ', 65536));
            c.extend_from_slice(b"\r\n");
            c
        } else {
            vec![b' '; 65536]
        };
        for i in 0..64 {
            stream
                .write_all(&chunk)
                .await
                .unwrap_or_else(|e| panic!("{framing}: write {i} failed: {e}"));
        }
        let answer = read_until_closed(&mut stream, 20)
            .await
            .expect("closed after the 413");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{framing}: {text}");
        assert!(text.contains("server.max_body_bytes"), "{framing}: {text}");
    }
    let ok = gw
        .post(
            "/v1/models/m:predict",
            json!({"instances": [[1.0, 2.0]]}).to_string(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// What the server did with each stream of a raw HTTP/2 flood.
#[derive(Debug, Default)]
struct Flood {
    answered: usize,
    refused: usize,
    other_resets: usize,
    goaway: bool,
}

/// Speaks HTTP/2 by hand, as a hostile client would: the preface, then `streams` GET
/// /healthz HEADERS frames at once, before reading the server's SETTINGS (so no client
/// library's limit holds them back); then counts, per stream, an answer (a HEADERS frame)
/// or a reset, until every stream is accounted for or the connection ends.
async fn h2_flood(addr: &str, streams: u32) -> Flood {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    // HPACK: :method GET (static 2), :scheme http (static 6), :path "/healthz" (literal,
    // name 4), :authority "localhost" (literal, name 1).
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    for i in 0..streams {
        let id = 2 * i + 1;
        out.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[0x1, 0x5]); // HEADERS, END_STREAM | END_HEADERS
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&block);
    }
    stream.write_all(&out).await.unwrap();
    let mut flood = Flood::default();
    let mut seen = std::collections::HashSet::new();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 16384];
        loop {
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let payload = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                match kind {
                    // :status 200 is static index 8; another status is seen, not answered.
                    0x1 if seen.insert(id) && payload.first() == Some(&0x88) => {
                        flood.answered += 1;
                    }
                    0x3 if seen.insert(id) => {
                        if payload == [0, 0, 0, 7] {
                            flood.refused += 1;
                        } else {
                            flood.other_resets += 1;
                        }
                    }
                    0x4 if flags & 1 == 0 => {
                        stream
                            .write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
                            .await
                            .unwrap();
                    }
                    0x6 if flags & 1 == 0 => {
                        let mut pong = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                        pong.extend_from_slice(&payload);
                        stream.write_all(&pong).await.unwrap();
                    }
                    0x7 => {
                        flood.goaway = true;
                        return;
                    }
                    _ => {}
                }
            }
            if seen.len() >= streams as usize {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server neither answered nor refused every stream: {flood:?}"
    );
    flood
}

/// A client opening 1,000 or 2,000 HTTP/2 streams at once, before it has the server's
/// SETTINGS, gets the streams within `max_concurrent_streams` answered and the rest refused
/// with REFUSED_STREAM (safe to retry), not a GOAWAY (h2's default reset budget ended the
/// 2,000 burst with GOAWAY and none answered); within the limit, all are answered; past the
/// reset budget (`h2_reset_budget`) the connection is closed. A well-behaved client (the h2
/// crate, which waits for the limit) gets all 1,000 answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_over_the_limit_are_refused_not_the_connection() {
    let backend = backend(Duration::ZERO).await;
    let gw = gateway_with("max_concurrent_streams = 100", &backend).await;
    for streams in [1000, 2000] {
        let flood = h2_flood(&addr(&gw.url), streams).await;
        assert!(!flood.goaway, "{streams}: {flood:?}");
        assert!(flood.answered >= 100, "{streams}: {flood:?}");
        assert_eq!(
            flood.answered + flood.refused,
            streams as usize,
            "{flood:?}"
        );
    }
    let within = h2_flood(&addr(&gw.url), 100).await;
    assert_eq!(within.answered, 100, "{within:?}");
    let budget = infergate::server::h2_reset_budget(100) as u32;
    let abusive = h2_flood(&addr(&gw.url), 100 + budget + 200).await;
    assert!(abusive.goaway, "past the reset budget: {abusive:?}");

    // h2 frees a stream's slot just after its END_STREAM is queued, so a client that opens
    // the next stream the moment it reads one (the h2 crate does) may rarely be refused in
    // that window; REFUSED_STREAM means "not processed", so it retries, as RFC 9113 §8.7
    // allows. Every other error fails the test, and every request must end 200.
    let tcp = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut pending = Vec::new();
    for _ in 0..1000 {
        let mut client = client.clone().ready().await.unwrap();
        let url = format!("{}/healthz", gw.url);
        pending.push(tokio::spawn(async move {
            for _ in 0..5 {
                let request = http::Request::get(&url).body(()).unwrap();
                let (response, _) = client.send_request(request, true).unwrap();
                match response.await {
                    Ok(response) => return response.status(),
                    Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                        client = client.ready().await.unwrap();
                    }
                    Err(e) => panic!("well-behaved client: {e}"),
                }
            }
            panic!("refused five times in a row")
        }));
    }
    for response in pending {
        assert_eq!(response.await.unwrap(), 200);
    }
    driver.abort();
}

/// When the drain timeout passes with a request still waiting on a hung backend, the request
/// is answered 503 (naming server.drain_timeout_ms), not cut off; one that finishes within
/// the drain is answered normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_answers_503_both_ways() {
    for (cost_ms, expect) in [(60_000, 503), (1000, 200)] {
        let backend = backend(Duration::from_millis(cost_ms)).await;
        let gw = gateway_with("drain_timeout_ms = 3000", &backend).await;
        let url = format!("{}/v1/models/m:predict", gw.url);
        let waiting = tokio::spawn(async move {
            send(
                Method::POST,
                &url,
                Bytes::from(json!({"instances": [[1, 1]]}).to_string()),
                &[],
            )
            .await
        });
        let metrics_url = format!("{}/metrics", gw.admin_url);
        eventually(10, "the predict in flight", || {
            let url = metrics_url.clone();
            async move {
                let text = send(Method::GET, &url, Bytes::new(), &[]).await.text();
                text.contains("infergate_requests_in_flight{model=\"m\"} 1")
            }
        })
        .await;
        gw.shutdown().await;
        let reply = waiting.await.unwrap();
        assert_eq!(
            reply.status,
            expect,
            "backend cost {cost_ms} ms: {}",
            reply.text()
        );
        if expect == 503 {
            assert!(
                reply.error().contains("server.drain_timeout_ms"),
                "{}",
                reply.text()
            );
        }
    }
}

/// A 10 KB version label is a 400 naming the limit, not a lookup; a label within the limit
/// is looked up (the backend's own 400: it serves no such label).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_path_segments_are_400() {
    let backend = backend(Duration::ZERO).await;
    let gw = gateway_with("", &backend).await;
    let body = json!({"instances": [[1, 1]]}).to_string();
    let long = format!("/v1/models/m/labels/{}:predict", "x".repeat(10 * 1024));
    let reply = gw.post(&long, body.clone()).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.error().contains("at most 256"), "{}", reply.text());
    let short = format!("/v1/models/m/labels/{}:predict", "x".repeat(256));
    let reply = gw.post(&short, body).await;
    assert!(
        reply
            .error()
            .contains("Unrecognized servable version label"),
        "{}",
        reply.text()
    );
}

/// A `max_connections` the descriptor limit can't hold is refused at load, naming the limit
/// and both ways out; the largest that fits loads.
#[test]
fn max_connections_must_fit_the_descriptor_limit() {
    let (_dir, path) = gateway()
        .server_config("max_connections = 1000000000")
        .write();
    let error = infergate::GatewayConfig::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("does not fit the file-descriptor limit"),
        "{error}"
    );
    assert!(error.contains("ulimit -n"), "{error}");
    let budget = infergate::server::fd_budget();
    let (_dir, path) = gateway()
        .server_config(&format!("max_connections = {}", budget.connections))
        .write();
    assert!(infergate::GatewayConfig::load(&path).is_ok());
}

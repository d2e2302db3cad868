//! The in-process load generator: `c` client tasks, each looping request → response for a
//! fixed window, latencies into HDR histograms. It drives the direct gRPC target (one shared
//! tonic channel, HTTP/2 multiplexed, which is how a Rust service would call TF Serving: no
//! external HTTP load generator speaks gRPC) and, with `--load hyper`, the HTTP targets
//! (one kept-alive HTTP/1.1 connection per task, as a pool of real callers would); `wrk.rs`
//! drives the HTTP targets by default. Every setup's correctness check goes through here.

use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infergate::proto::tensorflow::serving::PredictRequest;
use infergate::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Latencies are kept in microseconds, 1 µs to 60 s, 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// What a client sends.
#[derive(Clone)]
pub enum Target {
    /// POST `body` with `content_type` and `headers` to `uri`; `body_file` holds the same
    /// bytes for wrk.
    Http {
        uri: Uri,
        body: Bytes,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body_file: std::path::PathBuf,
    },
    /// `Predict(request)` on a shared channel.
    Grpc {
        channel: Channel,
        request: PredictRequest,
    },
}

impl Target {
    /// One request; its answer's body (empty for gRPC), or what went wrong.
    pub async fn once(&self, client: &HttpClient) -> Result<Bytes, String> {
        match self {
            Target::Http {
                uri,
                body,
                content_type,
                headers,
                ..
            } => post(client, uri, body.clone(), content_type, headers).await,
            Target::Grpc { channel, request } => {
                let mut grpc = PredictionServiceClient::new(channel.clone())
                    .max_decoding_message_size(64 << 20);
                grpc.predict(request.clone())
                    .await
                    .map(|_| Bytes::new())
                    .map_err(|status| status.to_string())
            }
        }
    }
}

/// What the clients saw in one measured window.
pub struct Tally {
    /// Successful requests that finished inside the window.
    pub completed: u64,
    pub errors: u64,
    /// The first error's text, for the log.
    pub first_error: Option<String>,
    /// Latencies (µs) of the successful requests that were also sent inside the window.
    pub latencies: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            completed: 0,
            errors: 0,
            first_error: None,
            latencies: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
    }

    pub fn percentile(&self, q: f64) -> Duration {
        Duration::from_micros(self.latencies.value_at_quantile(q))
    }
}

/// Runs `concurrency` clients against `target` from now until `until`, counting what finishes
/// in [`from`, `until`].
pub async fn run(target: &Target, concurrency: usize, from: Instant, until: Instant) -> Tally {
    let clients: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(client_loop(target.clone(), from, until)))
        .collect();
    let mut tally = Tally::new();
    for client in clients {
        // A client task only ends by finishing its loop; a panic is a bench bug.
        tally.merge(client.await.expect("client task"));
    }
    tally
}

/// Loops request → response until `until`. Latency is taken only from requests also sent
/// after `from`: a client's first requests wait for their connection and for the server's
/// queues to reach their steady state.
async fn client_loop(target: Target, from: Instant, until: Instant) -> Tally {
    let client = http_client();
    let mut tally = Tally::new();
    while Instant::now() < until {
        let started = Instant::now();
        let outcome = target.once(&client).await;
        let finished = Instant::now();
        if finished < from || finished > until {
            continue;
        }
        match outcome {
            Ok(_) => {
                tally.completed += 1;
                if started >= from {
                    let us = (finished - started).as_micros() as u64;
                    let _ = tally.latencies.record(us.clamp(1, MAX_LATENCY_US));
                }
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
            }
        }
    }
    tally
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client that keeps one idle connection: each task sends one request at a time, so it
/// reuses a single kept-alive HTTP/1.1 connection.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    // Without it Nagle may hold a request's last segment for the server's delayed ACK, and
    // the bench would measure the kernel's timers instead of the server.
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// POSTs `body`; the answer's body when it was a 200.
pub async fn post(
    client: &HttpClient,
    uri: &Uri,
    body: Bytes,
    content_type: &str,
    headers: &[(&'static str, String)],
) -> Result<Bytes, String> {
    let mut request = Request::post(uri.clone()).header(header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    // Read the whole body: the connection goes back to the pool only once it is drained.
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

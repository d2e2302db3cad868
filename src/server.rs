//! The accept loop shared by the public and admin listeners: one task per connection,
//! protocol-agnostic (HTTP/1.1, h2 and h2c by hyper's auto builder, over TLS when the listener
//! has it), each bounded — headers within a timeout, idle connections closed, a cap on open
//! connections below the file-descriptor limit, HTTP/2 streams per connection — and all
//! watched so shutdown stops accepting, lets in-flight requests finish within the drain
//! timeout, and answers those still running then with a 503 before it returns.

mod conns;
mod linger;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::ingress::Body;
use crate::tls::Acceptor;
use crate::workers::Workers;
use conns::{Conns, Slot};
use linger::LingerStream;

/// Connections the kernel queues for `accept` per listener. The common default (128) drops
/// bursts of new clients, who then retry a second later.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Open connections the admin listener takes: operators and scrapers, not traffic. Counted
/// in the descriptor reserve of [`fd_budget`].
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// After the drain timeout, how long the 503s for requests still running get to be written
/// before the listener gives up on their connections.
const EXPIRED_GRACE: Duration = Duration::from_secs(1);

/// Binds `addr` with a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How the process's file descriptors are shared out.
#[derive(Debug, Clone, Copy)]
pub struct FdBudget {
    /// `RLIMIT_NOFILE` (soft), capped at 2^20 when unlimited.
    pub limit: u64,
    /// Kept for backend channels, model and plugin files, the watcher, logs and the admin
    /// listener: a quarter of the limit, at least 256 (half of a limit under 512).
    pub reserved: usize,
    /// What is left for public connections: the default `server.max_connections`.
    pub connections: usize,
}

/// The descriptor budget of this process, from its `RLIMIT_NOFILE`.
pub fn fd_budget() -> FdBudget {
    let limit = nofile_limit().unwrap_or(1024).min(1 << 20);
    let as_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserved = (as_usize / 4).max(256.min(as_usize / 2));
    FdBudget {
        limit,
        reserved,
        connections: as_usize.saturating_sub(reserved).max(1),
    }
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (no unsafe `getrlimit` call, no
/// dependency); `None` where there is no procfs, and `u64::MAX` for "unlimited".
fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Refused or reset streams one HTTP/2 connection may cause before it is closed with
/// GOAWAY ENHANCE_YOUR_CALM: h2's default of 1024 plus ten bursts of the stream limit.
pub fn h2_reset_budget(max_concurrent_streams: u32) -> usize {
    1024 + 10 * max_concurrent_streams as usize
}

/// The bounds one listener applies to its connections.
#[derive(Clone)]
pub struct Limits {
    /// `public` or `admin`, for logs and metrics.
    pub name: &'static str,
    pub drain: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub tls: Option<Arc<Acceptor>>,
    pub metrics: ConnMetrics,
    /// The runtimes its connections are spread over; `None` runs them on the runtime that
    /// accepted them.
    pub workers: Option<Workers>,
}

impl Limits {
    /// The public listener's bounds from `[server]`.
    pub fn public(server: &ServerConfig, tls: Option<Arc<Acceptor>>, metrics: ConnMetrics) -> Self {
        Limits {
            name: "public",
            drain: server.drain_timeout(),
            header_timeout: server.header_timeout(),
            idle_timeout: server.idle_timeout(),
            max_connections: server.effective_max_connections(),
            max_concurrent_streams: server.max_concurrent_streams,
            tls,
            metrics,
            workers: None,
        }
    }

    /// The admin listener's: the same timeouts, its own small cap, never TLS.
    pub fn admin(server: &ServerConfig, metrics: ConnMetrics) -> Self {
        Limits {
            name: "admin",
            max_connections: ADMIN_MAX_CONNECTIONS,
            tls: None,
            ..Limits::public(server, None, metrics)
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    /// `idle` (idle timeout), `shed` (closed for a newer one at the cap), `refused` (at the
    /// cap with none idle), `tls_handshake` (failed or timed out).
    reason: &'static str,
}

/// The connection series, shared by both listeners.
#[derive(Clone, Default)]
pub struct ConnMetrics {
    open: Family<ListenerLabel, Gauge>,
    closed: Family<ClosedLabels, Counter>,
    accept_errors: Family<ListenerLabel, Counter>,
}

impl ConnMetrics {
    pub fn register(registry: &mut Registry) -> ConnMetrics {
        let metrics = ConnMetrics::default();
        registry.register(
            "infergate_connections_open",
            "Open client connections per listener",
            metrics.open.clone(),
        );
        registry.register(
            "infergate_connections_closed",
            "Connections the gateway closed or refused, by reason (idle, shed, refused, tls_handshake)",
            metrics.closed.clone(),
        );
        registry.register(
            "infergate_accept_errors",
            "Failed accept() calls (e.g. out of file descriptors) per listener",
            metrics.accept_errors.clone(),
        );
        metrics
    }

    fn closed(&self, listener: &'static str, reason: &'static str) {
        self.closed
            .get_or_create(&ClosedLabels { listener, reason })
            .inc();
    }
}

/// Where shutdown stands, watched by every connection and request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Serving,
    /// Not accepting; connections close once their requests are answered.
    Draining,
    /// The drain timeout passed: requests still running are answered 503 now.
    Expired,
}

/// Serves `listener` with `handler` until `shutdown` resolves, then drains (see the module
/// docs).
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer makes hyper enforce the header timeout: from the moment a connection waits
    // for a request head (first, or next on keep-alive) until the head is complete.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // A stream over the limit is refused (RST_STREAM REFUSED_STREAM), and h2 counts each
    // refusal against a per-connection budget of resets, its defence against reset floods;
    // past it the connection gets GOAWAY ENHANCE_YOUR_CALM and even the streams it had
    // accepted go unanswered. h2's default budget (1024) let one burst of 1,300 streams on
    // 200 slots end that way, so it scales with the limit here.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_local_error_reset_streams(h2_reset_budget(limits.max_concurrent_streams));
    let builder = Arc::new(builder);
    let conns = Conns::new(limits.max_connections);
    let lingering = Arc::new(AtomicUsize::new(0));
    let (phase_tx, phase) = watch::channel(Phase::Serving);
    let mut errors = AcceptErrors::new(limits.name);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    limits.metrics.accept_errors.get_or_create(&ListenerLabel { listener: limits.name }).inc();
                    tokio::select! {
                        () = errors.failed(&e) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        errors.succeeded();
        let (slot, shed) = match conns.admit() {
            Ok(admitted) => admitted,
            Err(full) => {
                limits.metrics.closed(limits.name, "refused");
                errors.refused(full.max);
                continue;
            }
        };
        if shed {
            limits.metrics.closed(limits.name, "shed");
        }
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            limits: limits.clone(),
            phase: phase.clone(),
            lingering: lingering.clone(),
        };
        // Owned by the connection table: drain waits for it through `conns`.
        let handler = handler.clone();
        match &limits.workers {
            Some(workers) if workers.len() > 1 => match stream.into_std() {
                // Registered again on the worker's own reactor, where it will be polled.
                Ok(stream) => workers.spawn_connection(move || async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => connection.run(stream, peer, slot, handler).await,
                        Err(e) => {
                            tracing::debug!(%peer, "could not hand the connection to a worker: {e}");
                        }
                    }
                }),
                Err(e) => {
                    tracing::debug!(%peer, "could not hand the connection to a worker: {e}");
                }
            },
            _ => {
                tokio::spawn(connection.run(stream, peer, slot, handler));
            }
        }
    }
    drop(listener);
    let _ = phase_tx.send(Phase::Draining);
    let drained = tokio::time::timeout(limits.drain, conns.all_closed()).await;
    if drained.is_err() {
        tracing::warn!(
            listener = limits.name,
            open = conns.len(),
            "drain timeout of {} ms passed with requests still running: answering them 503",
            limits.drain.as_millis()
        );
        let _ = phase_tx.send(Phase::Expired);
        let _ = tokio::time::timeout(EXPIRED_GRACE, conns.all_closed()).await;
    }
}

/// What one connection's task needs from its listener.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    phase: watch::Receiver<Phase>,
    lingering: Arc<AtomicUsize>,
}

impl Connection {
    async fn run<H, F>(self, stream: TcpStream, peer: SocketAddr, slot: Slot, handler: H)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let name = self.limits.name;
        let metrics = self.limits.metrics.clone();
        let open = metrics
            .open
            .get_or_create(&ListenerLabel { listener: name })
            .clone();
        open.inc();
        let stream = LingerStream::new(stream, slot.state.clone(), self.lingering.clone());
        let io = match &self.limits.tls {
            None => tokio_util::either::Either::Left(stream),
            Some(acceptor) => {
                // The handshake is bounded like a request head: a client that opens a
                // socket and stalls mid-handshake holds it no longer.
                let handshake = acceptor.current().accept(stream);
                match tokio::time::timeout(self.limits.header_timeout, handshake).await {
                    Ok(Ok(tls)) => tokio_util::either::Either::Right(tls),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        metrics.closed(name, "tls_handshake");
                        open.dec();
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        slot.state.mark_closed_idle();
                        metrics.closed(name, "tls_handshake");
                        open.dec();
                        return;
                    }
                }
            }
        };
        let service = {
            let conns = slot.conns().clone();
            let state = slot.state.clone();
            let phase = self.phase.clone();
            let drain = self.limits.drain;
            service_fn(move |request| {
                let guard = state.begin_request(&conns);
                let mut phase = phase.clone();
                let handled = handler(request);
                async move {
                    let _guard = guard;
                    tokio::select! {
                        biased;
                        response = handled => response,
                        _ = phase.wait_for(|p| *p == Phase::Expired) => Ok(drain_expired(drain)),
                    }
                }
            })
        };
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut phase = self.phase.clone();
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                    break;
                }
                () = slot.state.shed_requested(), if !closing => {
                    tracing::debug!(%peer, "closing the longest-idle connection for a new one (server.max_connections)");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = slot.state.idle_for(slot.conns().base(), self.limits.idle_timeout), if !closing => {
                    slot.state.mark_closed_idle();
                    metrics.closed(name, "idle");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = phase.wait_for(|p| *p != Phase::Serving), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        open.dec();
    }
}

/// The answer for a request still running when the drain timeout passes.
fn drain_expired(drain: Duration) -> Response<Body> {
    let body = serde_json::json!({
        "error": format!(
            "the gateway is shutting down and this request did not finish within \
             server.drain_timeout_ms ({} ms); retry it on another replica",
            drain.as_millis()
        )
    });
    let mut response = Response::new(crate::ingress::full(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Accept failures (out of descriptors, above all) back off exponentially and are logged at
/// most once per [`AcceptErrors::LOG_EVERY`] with a count, not once per failure; so are
/// connections refused at the cap.
struct AcceptErrors {
    listener: &'static str,
    backoff: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    const FIRST_BACKOFF: Duration = Duration::from_millis(5);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            backoff: Self::FIRST_BACKOFF,
            last_log: None,
            suppressed: 0,
        }
    }

    /// Logs (rate-limited) and sleeps the current backoff, doubling it.
    async fn failed(&mut self, e: &std::io::Error) {
        self.log(|suppressed, listener| {
            tracing::warn!(
                listener,
                suppressed,
                "accept failed: {e}; backing off (out of file descriptors? see server.max_connections)"
            );
        });
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Self::MAX_BACKOFF);
    }

    fn refused(&mut self, max: usize) {
        self.log(|suppressed, listener| {
            tracing::warn!(
                listener,
                suppressed,
                "connection refused: {max} connections open and none idle (server.max_connections)"
            );
        });
    }

    fn succeeded(&mut self) {
        self.backoff = Self::FIRST_BACKOFF;
    }

    fn log(&mut self, emit: impl FnOnce(u64, &'static str)) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|last| now.duration_since(last) < Self::LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        emit(self.suppressed, self.listener);
        self.suppressed = 0;
        self.last_log = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each failure sleeps the current backoff and doubles it, from 5 ms up to 1 s and no
    /// further; an accepted connection starts it again at 5 ms (paused clock).
    #[tokio::test(start_paused = true)]
    async fn accept_backoff_doubles_to_its_cap_and_resets() {
        let mut errors = AcceptErrors::new("public");
        let e = std::io::Error::from_raw_os_error(24); // EMFILE
        let mut slept = Vec::new();
        for _ in 0..10 {
            let began = Instant::now();
            errors.failed(&e).await;
            slept.push(began.elapsed().as_millis());
        }
        assert_eq!(slept, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        errors.succeeded();
        let began = Instant::now();
        errors.failed(&e).await;
        assert_eq!(began.elapsed(), AcceptErrors::FIRST_BACKOFF);
    }

    /// The first failure is logged; the next ones within 10 s only counted; the first after
    /// 10 s is logged with the count of those it stood for.
    #[tokio::test(start_paused = true)]
    async fn accept_error_logs_are_rate_limited_with_a_count() {
        let mut errors = AcceptErrors::new("public");
        let mut logged = Vec::new();
        for _ in 0..311 {
            errors.log(|suppressed, listener| logged.push((suppressed, listener)));
        }
        assert_eq!(logged, [(0, "public")]);
        tokio::time::advance(AcceptErrors::LOG_EVERY - Duration::from_millis(1)).await;
        errors.log(|suppressed, listener| logged.push((suppressed, listener)));
        assert_eq!(logged.len(), 1, "logged again within LOG_EVERY");
        tokio::time::advance(Duration::from_millis(1)).await;
        errors.log(|suppressed, listener| logged.push((suppressed, listener)));
        assert_eq!(logged, [(0, "public"), (311, "public")]);
    }
}

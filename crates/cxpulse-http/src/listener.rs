//! Serving any axum `Router` with limits, so that no client, slow, idle or numerous, can hold the
//! process: every listener of cxpulse (the worker's and the gateway's) goes through [`serve`].
//!
//! - a request's headers must arrive within `header_read_timeout` of the connection opening or
//!   of the first byte of the request (slowloris);
//! - a TLS handshake must finish within `tls_handshake_timeout`;
//! - a connection on which nothing moves for `keep_alive_timeout` is closed (an idle keep-alive
//!   connection, a client that stopped reading its response);
//! - at most `max_connections` are served at once; past that, a small reserve lane still answers
//!   the probes (`/healthz`, `/readyz`) and nothing else, its oldest connection giving way to a new
//!   one, so an orchestrator's probe gets through a flood;
//! - a request body is at most `max_body_bytes` (413 beyond).
//!
//! HTTP/1.1 only: what Prometheus, curl and the probes speak.
//!
//! Use: flatten [`HttpLimits`] into the listener's config section, then
//! `let listener = bind(&section.listen)?;` before anything else starts (a taken address then
//! fails at once), and later, inside a tokio runtime,
//! `serve(listener, router, section.limits.resolve("gateway")?, tls, shutdown).await`, with `tls`
//! from [`crate::security::tls_acceptor`] when configured.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use cxpulse_core::duration::DurationSetting;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// Paths the reserve lane answers when the connection cap is reached.
pub const PROBE_PATHS: [&str; 2] = ["/healthz", "/readyz"];
/// Connections in the reserve lane; the oldest is closed when a new one arrives.
const PROBE_LANE: usize = 32;
/// The reserve lane's own time limits: a probe is one short request.
const PROBE_LANE_TIMEOUT: Duration = Duration::from_secs(2);
/// File descriptors kept for everything that is not an HTTP connection (Kafka sockets, files).
const FD_RESERVE: usize = 128;
/// How long open connections get to finish their request once shutdown begins, by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// hyper's read buffer per connection: request headers larger than this are refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The limits of one listener, as written in its config section (`[http]`, `[gateway]`).
/// Flatten it into the section: `#[serde(flatten)] pub limits: HttpLimits`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct HttpLimits {
    /// Time to receive a request's complete headers.
    #[serde(deserialize_with = "header_read_timeout")]
    pub header_read_timeout: DurationSetting,
    /// Time to complete a TLS handshake.
    #[serde(deserialize_with = "tls_handshake_timeout")]
    pub tls_handshake_timeout: DurationSetting,
    /// A connection on which nothing moves this long is closed.
    #[serde(deserialize_with = "keep_alive_timeout")]
    pub keep_alive_timeout: DurationSetting,
    /// Connections served at once (probes still answer past it).
    pub max_connections: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: DurationSetting::secs(10),
            tls_handshake_timeout: DurationSetting::secs(10),
            keep_alive_timeout: DurationSetting::secs(30),
            max_connections: 512,
            max_body_bytes: 1024 * 1024,
        }
    }
}

// Flattened into its section, a key loses its name in serde's errors (`… in `gateway``); these
// put it back.
fn header_read_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<DurationSetting, D::Error> {
    named_duration("header_read_timeout", d)
}

fn tls_handshake_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<DurationSetting, D::Error> {
    named_duration("tls_handshake_timeout", d)
}

fn keep_alive_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<DurationSetting, D::Error> {
    named_duration("keep_alive_timeout", d)
}

fn named_duration<'de, D: Deserializer<'de>>(
    key: &str,
    deserializer: D,
) -> Result<DurationSetting, D::Error> {
    let text = String::deserialize(deserializer)?;
    DurationSetting::parse(&text).map_err(|e| serde::de::Error::custom(format!("{key}: {e}")))
}

/// [`HttpLimits`] checked and resolved into durations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub header_read: Duration,
    pub tls_handshake: Duration,
    pub keep_alive: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// Once shutdown begins, how long requests in flight get to finish (not a config key of
    /// `[http]`: the gateway sets it from its `drain_timeout`).
    pub shutdown_grace: Duration,
}

impl HttpLimits {
    /// Checks every limit; `section` names the config section in errors (`http`, `gateway`).
    pub fn resolve(&self, section: &str) -> anyhow::Result<Limits> {
        let duration = |key: &str, setting: &DurationSetting| -> anyhow::Result<Duration> {
            if setting.ms() <= 0 {
                anyhow::bail!("[{section}] {key} must be longer than 0");
            }
            Ok(setting.get())
        };
        if self.max_connections == 0 {
            anyhow::bail!("[{section}] max_connections must be at least 1");
        }
        Ok(Limits {
            header_read: duration("header_read_timeout", &self.header_read_timeout)?,
            tls_handshake: duration("tls_handshake_timeout", &self.tls_handshake_timeout)?,
            keep_alive: duration("keep_alive_timeout", &self.keep_alive_timeout)?,
            max_connections: self.max_connections,
            max_body_bytes: self.max_body_bytes,
            shutdown_grace: SHUTDOWN_GRACE,
        })
    }
}

/// Binds `addr` now (a plain, blocking call), so that a caller can fail before doing anything
/// else when the address is taken or not local.
pub fn bind(addr: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    Ok(listener)
}

/// Serves `app` on `listener` (from [`bind`]) with `limits`, over TLS when `tls` is given, until
/// `shutdown` completes; open connections then get `limits.shutdown_grace` to finish. Must run inside a
/// tokio runtime. Errors only when the listener cannot be used at all.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<openssl::ssl::SslAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| anyhow::anyhow!("cannot serve HTTP: {e}"))?;
    let cap = effective_cap(limits.max_connections);
    let main_lane = Arc::new(Lane::main(app.clone(), limits));
    let probe_lane = Arc::new(Lane::probes(app, limits));
    let tls = tls.map(Arc::new);
    let slots = Arc::new(Semaphore::new(cap));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut reserve: VecDeque<AbortHandle> = VecDeque::new();
    let mut warned_at: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, typically: wait for connections to close instead of spinning.
                warn_now_and_then(&mut warned_at, || tracing::warn!(error = %e, "accept failed"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (lane, slot) = match slots.clone().try_acquire_owned() {
            Ok(slot) => (main_lane.clone(), Some(slot)),
            Err(_) => {
                warn_now_and_then(&mut warned_at, || {
                    tracing::warn!(cap, "HTTP connection cap reached: only probes are answered")
                });
                reserve.retain(|handle| !handle.is_finished());
                if reserve.len() >= PROBE_LANE {
                    if let Some(oldest) = reserve.pop_front() {
                        oldest.abort();
                    }
                }
                (probe_lane.clone(), None)
            }
        };
        let in_reserve = slot.is_none();
        let (tls, stop) = (tls.clone(), stop_rx.clone());
        let handle = connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => lane.drive(tcp, stop).await,
                Some(acceptor) => {
                    let handshake = tls_accept(&acceptor, tcp);
                    match tokio::time::timeout(lane.limits.tls_handshake, handshake).await {
                        Ok(Some(stream)) => lane.drive(stream, stop).await,
                        Ok(None) => {}
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
        if in_reserve {
            reserve.push_back(handle);
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace + Duration::from_secs(1), drained).await.is_err()
    {
        connections.abort_all();
    }
    Ok(())
}

/// Logs at most once every 30 s, so a flood does not flood the log too.
fn warn_now_and_then(last: &mut Option<Instant>, log: impl FnOnce()) {
    let now = Instant::now();
    if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(30)) {
        *last = Some(now);
        log();
    }
}

/// The connection cap, lowered to what the process's descriptor limit can hold.
fn effective_cap(configured: usize) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return configured;
    }
    let room = (limit.rlim_cur as usize).saturating_sub(FD_RESERVE + PROBE_LANE).max(1);
    if room < configured {
        tracing::warn!(
            configured,
            used = room,
            descriptors = limit.rlim_cur,
            "max_connections lowered to fit the open-file limit (raise it with ulimit -n)"
        );
    }
    configured.min(room)
}

async fn tls_accept(
    acceptor: &openssl::ssl::SslAcceptor,
    tcp: tokio::net::TcpStream,
) -> Option<tokio_openssl::SslStream<tokio::net::TcpStream>> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).ok()?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).ok()?;
    match Pin::new(&mut stream).accept().await {
        Ok(()) => Some(stream),
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
    }
}

/// How one kind of connection is served: the main lane, or the probes-only reserve.
struct Lane {
    app: Router,
    limits: Limits,
    keep_alive: bool,
}

impl Lane {
    fn main(app: Router, limits: Limits) -> Lane {
        Lane { app: with_body_limit(app, limits.max_body_bytes), limits, keep_alive: true }
    }

    fn probes(app: Router, limits: Limits) -> Lane {
        let app = with_body_limit(app, limits.max_body_bytes)
            .layer(axum::middleware::from_fn(probes_only));
        let limits = Limits {
            header_read: limits.header_read.min(PROBE_LANE_TIMEOUT),
            tls_handshake: limits.tls_handshake.min(PROBE_LANE_TIMEOUT),
            keep_alive: limits.keep_alive.min(PROBE_LANE_TIMEOUT),
            ..limits
        };
        Lane { app, limits, keep_alive: false }
    }

    /// Serves one connection until it ends, its watchdog fires, or shutdown's grace runs out.
    async fn drive<S>(&self, io: S, mut stop: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Mutex::new(Activity::new()));
        let io = Watched { inner: io, activity: activity.clone() };
        let service = hyper_util::service::TowerToHyperService::new(self.app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.keep_alive(self.keep_alive).max_buf_size(MAX_HEAD_BYTES).header_read_timeout(None);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let limits = self.limits;
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = watchdog(&activity, limits) => return,
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
        connection.as_mut().graceful_shutdown();
        let finish = async {
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = watchdog(&activity, limits) => {}
            }
        };
        let _ = tokio::time::timeout(limits.shutdown_grace, finish).await;
    }
}

/// Returns when the connection has overstayed a limit.
async fn watchdog(activity: &Mutex<Activity>, limits: Limits) {
    loop {
        let deadline = lock(activity).deadline(limits);
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

fn lock(activity: &Mutex<Activity>) -> std::sync::MutexGuard<'_, Activity> {
    activity.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the bytes on a connection say about where it is: reading a request's headers (since
/// when), or anything else (and when something last moved).
struct Activity {
    last_moved: Instant,
    head_started: Option<Instant>,
    /// A response went out since the last headers ended: the next byte read starts a request.
    between_requests: bool,
    /// The last bytes of the headers read so far, to find `\r\n\r\n` across reads.
    tail: [u8; 3],
}

impl Activity {
    fn new() -> Activity {
        let now = Instant::now();
        Activity { last_moved: now, head_started: Some(now), between_requests: false, tail: [0; 3] }
    }

    fn read(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        self.last_moved = now;
        if self.between_requests {
            self.between_requests = false;
            self.head_started = Some(now);
            self.tail = [0; 3];
        }
        if self.head_started.is_some() && self.ends_head(bytes) {
            self.head_started = None;
        }
    }

    /// Something was written, starting with `first`: only ever after a request's headers were
    /// read. After an interim `100 Continue` the body follows; after a response, a new request.
    fn wrote(&mut self, first: &[u8]) {
        self.last_moved = Instant::now();
        self.head_started = None;
        self.between_requests = !first.starts_with(b"HTTP/1.1 1");
    }

    fn ends_head(&mut self, bytes: &[u8]) -> bool {
        let seam: Vec<u8> = self.tail.iter().chain(bytes.iter().take(3)).copied().collect();
        let found = seam.windows(4).chain(bytes.windows(4)).any(|w| w == b"\r\n\r\n");
        let mut last = self.tail.to_vec();
        last.extend_from_slice(&bytes[bytes.len().saturating_sub(3)..]);
        self.tail.copy_from_slice(&last[last.len() - 3..]);
        found
    }

    fn deadline(&self, limits: Limits) -> Instant {
        match self.head_started {
            Some(started) => started + limits.header_read,
            None => self.last_moved + limits.keep_alive,
        }
    }
}

/// A stream that reports every byte moved to its connection's [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Mutex<Activity>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            lock(&self.activity).read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            lock(&self.activity).wrote(buf);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            lock(&self.activity).wrote(first);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refuses a declared body over the limit at once, and caps a streamed one (axum's extractors
/// then answer 413 too).
fn with_body_limit(app: Router, max: usize) -> Router {
    app.layer(axum::middleware::from_fn_with_state(max, limit_body))
        .layer(axum::extract::DefaultBodyLimit::max(max))
}

async fn limit_body(State(max): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    }
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, max)));
    next.run(request).await
}

async fn probes_only(request: Request, next: Next) -> Response {
    if PROBE_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The address a listener from [`bind`] got (useful with port 0).
pub fn local_addr(listener: &std::net::TcpListener) -> anyhow::Result<SocketAddr> {
    listener.local_addr().map_err(|e| anyhow::anyhow!("cannot read the bound address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_and_bad_limits_are_named() {
        let limits = HttpLimits::default().resolve("http").unwrap();
        assert_eq!(limits.header_read, Duration::from_secs(10));
        assert_eq!(limits.keep_alive, Duration::from_secs(30));
        let bad =
            HttpLimits { keep_alive_timeout: DurationSetting::secs(0), ..HttpLimits::default() };
        let error = bad.resolve("gateway").unwrap_err().to_string();
        assert!(error.contains("[gateway] keep_alive_timeout"), "{error}");
        let bad = HttpLimits { max_connections: 0, ..HttpLimits::default() };
        assert!(bad.resolve("http").is_err());
    }

    #[test]
    fn headers_end_is_found_across_reads() {
        let mut activity = Activity::new();
        activity.read(b"GET / HTTP/1.1\r\nHost: x\r");
        assert!(activity.head_started.is_some());
        activity.read(b"\n\r");
        assert!(activity.head_started.is_some());
        activity.read(b"\n");
        assert!(activity.head_started.is_none(), "headers complete");
        activity.wrote(b"HTTP/1.1 200 OK\r\n");
        activity.read(b"G");
        assert!(activity.head_started.is_some(), "the next request starts its own clock");
    }

    #[test]
    fn a_body_after_100_continue_is_not_taken_for_headers() {
        let mut activity = Activity::new();
        activity.read(b"POST /v1/events HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        activity.wrote(b"HTTP/1.1 100 Continue\r\n\r\n");
        activity.read(b"{\"event_id\":");
        assert!(activity.head_started.is_none(), "a body has no header clock");
    }
}

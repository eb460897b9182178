//! Serving the router: the one place that owns the listener, so that a hardened listener (header,
//! TLS and idle limits, a connection cap) replaces it here and nowhere else.

use std::future::Future;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tracing::warn;

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight finish
/// for at most `drain`; whatever is still running after that is dropped.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    // Replies are small and latency-bound: Nagle's algorithm would hold them back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(graceful);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            warn!(drain_ms = drain.as_millis() as u64, "requests still in flight after the drain time; closing");
            Ok(())
        }
    }
}

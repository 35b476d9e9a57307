//! The HTTP server loop: accepts connections and serves the router on each, with the
//! connection-level limits `axum::serve` does not set, and a shutdown that cannot be held
//! open by a client.
//!
//! - A client has `header_read_timeout` to send a request's headers; the same timer runs
//!   while a keep-alive connection waits for its next request, so idle and half-sent
//!   connections are closed instead of pinning a descriptor forever.
//! - On shutdown the listener closes at once, every connection is asked to finish its
//!   current request and close (idle ones close now), and whatever is still open after
//!   `grace` is dropped: a partial-header connection cannot delay the exit.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a request's headers, and to start the next request on an idle
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    /// How long open connections may take to finish once shutdown begins.
    pub grace: Duration,
    /// Largest request head read (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then closes every connection
/// within `limits.grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    // HTTP/2 has no header timer; pings find peers that vanished.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let header_read_timeout = limits.header_read_timeout;
                connections.spawn(async move {
                    // The protocol sniffing before hyper's own header timer runs has no timer
                    // of its own: a client that connects and sends nothing is dropped here.
                    let mut first = [0u8; 1];
                    let first_bytes = stream.peek(&mut first);
                    let first_bytes = tokio::time::timeout(header_read_timeout, first_bytes);
                    if !matches!(first_bytes.await, Ok(Ok(1))) {
                        return;
                    }
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    // Errors here are the client's (reset, timeout, garbage): nothing to do.
                    let _ = watcher.watch(connection).await;
                });
            }
        }
    }
    drop(listener);
    let open = connections.len();
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open,
            "connections still open after the grace period; closing them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

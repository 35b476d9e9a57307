//! The HTTP server loop: accepts connections and serves the router on each, with the
//! connection-level limits `axum::serve` does not set, and a shutdown that cannot be held
//! open by a client.
//!
//! - A client has `header_read_timeout` to send a request's headers; the same timer runs
//!   while a keep-alive connection waits for its next request, so idle and half-sent
//!   connections are closed instead of pinning a descriptor forever.
//! - A connection with no request in flight for `idle_timeout` is asked to close, whatever
//!   its protocol. HTTP/2 needs this: it has no header timer, and a live client answers the
//!   keep-alive pings, so without it an idle h2 connection would stay open forever.
//! - On shutdown the listener closes at once, every connection is asked to finish its
//!   current request and close (idle ones close now), and whatever is still open after
//!   `grace` is dropped: a partial-header connection cannot delay the exit.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a request's headers, and to start the next request on an idle
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight (HTTP/1 and HTTP/2).
    pub idle_timeout: Duration,
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
    // Asks every connection to close; cancelled once the listener stops.
    let closing = CancellationToken::new();
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
                let activity = Arc::new(Activity::new());
                let counted = activity.clone();
                // The guard is taken when the request is called and dropped when its response
                // is ready, so the connection counts as busy exactly while it serves one.
                let counting = ServiceExt::<axum::extract::Request<Incoming>>::map_future(
                    app.clone(),
                    move |answer| {
                        let busy = counted.begin();
                        async move {
                            let response: Result<axum::response::Response, Infallible> =
                                answer.await;
                            drop(busy);
                            response
                        }
                    },
                );
                let service = TowerToHyperService::new(counting);
                let builder = builder.clone();
                let closing = closing.clone();
                let header_read_timeout = limits.header_read_timeout;
                let idle_timeout = limits.idle_timeout;
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
                    let mut connection = std::pin::pin!(connection);
                    let mut asked_to_close = false;
                    loop {
                        let wake = idle_timeout.saturating_sub(activity.idle_for().unwrap_or_default());
                        tokio::select! {
                            // Errors here are the client's (reset, timeout, garbage): nothing
                            // to do.
                            _ = connection.as_mut() => break,
                            _ = closing.cancelled(), if !asked_to_close => {
                                connection.as_mut().graceful_shutdown();
                                asked_to_close = true;
                            }
                            _ = tokio::time::sleep(wake), if !asked_to_close => {
                                if activity.idle_for().is_some_and(|idle| idle >= idle_timeout) {
                                    // HTTP/2: GOAWAY, then close; HTTP/1: close now.
                                    connection.as_mut().graceful_shutdown();
                                    asked_to_close = true;
                                }
                            }
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let open = connections.len();
    closing.cancel();
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, drained).await.is_err() {
        tracing::warn!(
            open,
            "connections still open after the grace period; closing them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// Whether a connection is serving a request, and since when it has not been.
struct Activity {
    /// Requests called and not yet answered.
    in_flight: AtomicUsize,
    /// When the connection last became idle (opened, or its last answer was ready).
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// Marks a request as in flight until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// How long the connection has had nothing in flight; `None` while it serves a request.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        Some(since.elapsed())
    }
}

/// One request in flight on a connection; dropping it (answer ready, or the request
/// abandoned) makes the connection idle again when it was the last.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // Stamp first, then count down: a reader that sees zero in flight sees this time.
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

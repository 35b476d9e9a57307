//! Building and running the application: store, sandbox, providers, resolver, HTTP server
//! and workers, all wired into one [`AppState`].
//!
//! `Application::build` binds the port (port 0 in tests) and migrates; `run_until_stopped`
//! serves until the shutdown token is cancelled, then lets workers drain. Nothing here is
//! global, so tests run several applications side by side and "restart" one by building a
//! new one on the same database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::config::Settings;
use crate::domain::text::TextLimits;
use crate::http::server::{ConnectionLimits, serve};
use crate::intake::group_commit::GroupCommit;
use crate::message::MessageRenderer;
use crate::message::description::DescriptionRenderer;
use crate::metrics::Metrics;
use crate::providers::c2s::C2sClient;
use crate::providers::diretrix::DiretrixClient;
use crate::providers::guard::{Guard, GuardSettings, Guarded};
use crate::providers::sandbox::Sandbox;
use crate::providers::work_api::WorkApiClient;
use crate::resolution::{Resolver, Ttls};
use crate::state::AppState;
use crate::store::{self, InstanceLock, StoreError, Subscription};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the sandbox: {0}")]
    Sandbox(std::io::Error),
    #[error("cannot read the message template {path}: {source}")]
    TemplateFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Template(#[from] crate::message::MessageError),
    #[error("{0}")]
    Config(String),
}

pub struct Application {
    /// SQLite only: the proof that no other process serves the file; held until the
    /// application has stopped.
    instance_lock: Option<InstanceLock>,
    /// Postgres only: the invalidation subscription, made before memory is first filled.
    subscription: Option<Box<dyn Subscription>>,
    listener: TcpListener,
    /// Serves `/metrics` only, on its own port so it is never public.
    metrics_listener: TcpListener,
    state: AppState,
    /// Cancelled to stop: the server stops accepting, workers drain, the sandbox stops.
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let shutdown = CancellationToken::new();
        // The slowest load of a cold start, on the other core while the database opens and
        // migrates: the first phone parsed waits for it, nothing else does.
        tokio::task::spawn_blocking(crate::domain::phone::load_metadata);
        // Before anything touches the file: a second process on it must leave it untouched.
        let url = secrecy::ExposeSecret::expose_secret(&settings.database.url);
        let instance_lock = if url.starts_with("sqlite:") {
            InstanceLock::acquire(url)?
        } else {
            None
        };
        let store = store::connect(&settings.database).await?;
        store.migrate().await?;
        crate::intake::convert_stored_events(store.as_ref()).await?;
        tracing::info!(
            database = %settings.database.redacted_url(),
            backend = store.backend(),
            "database ready"
        );

        let sandbox = if settings.sandbox_enabled() {
            let sandbox = Sandbox::start(
                Duration::from_millis(settings.sandbox.latency_ms),
                shutdown.child_token(),
            )
            .await
            .map_err(StartupError::Sandbox)?;
            tracing::info!(addr = %sandbox.addr, "sandbox providers running");
            Some(sandbox)
        } else {
            None
        };

        // An explicit setting wins over the sandbox, so one provider can be real while the
        // others are simulated.
        let base = |configured: &Option<String>, prefix: &str| -> Result<url::Url, StartupError> {
            match (configured, &sandbox) {
                (Some(url), _) => url::Url::parse(url)
                    .map_err(|_| StartupError::Config(format!("invalid {prefix} base URL"))),
                (None, Some(s)) => Ok(s.base_url(prefix)),
                (None, None) => Err(StartupError::Config(format!("{prefix} base URL missing"))),
            }
        };
        let secret = |configured: &Option<SecretString>| {
            configured
                .clone()
                .unwrap_or_else(|| SecretString::from("sandbox"))
        };

        let guard = |provider: &'static str,
                     failures: u32,
                     open_secs: u64,
                     max_concurrent: usize,
                     max_calls_per_sec: f64| {
            Arc::new(Guard::new(
                provider,
                GuardSettings {
                    breaker_failures: failures,
                    breaker_open: Duration::from_secs(open_secs),
                    max_concurrent,
                    max_calls_per_sec,
                },
            ))
        };
        let d = &settings.diretrix;
        let w = &settings.work_api;
        let c = &settings.c2s;
        let guards = vec![
            guard(
                "diretrix",
                d.breaker_failures,
                d.breaker_open_secs,
                d.max_concurrent,
                d.max_calls_per_sec,
            ),
            guard(
                "work_api",
                w.breaker_failures,
                w.breaker_open_secs,
                w.max_concurrent,
                w.max_calls_per_sec,
            ),
            guard(
                "c2s",
                c.breaker_failures,
                c.breaker_open_secs,
                c.max_concurrent,
                c.max_calls_per_sec,
            ),
        ];
        let diretrix = DiretrixClient::new(
            base(&settings.diretrix.base_url, "diretrix")?,
            secret(&settings.diretrix.user),
            secret(&settings.diretrix.password),
            Duration::from_millis(settings.diretrix.timeout_ms),
            settings.diretrix.max_answer_bytes,
        )
        .with_max_field_chars(settings.diretrix.max_field_chars);
        let work_api = WorkApiClient::new(
            base(&settings.work_api.base_url, "work")?,
            secret(&settings.work_api.token),
            Duration::from_millis(settings.work_api.timeout_ms),
            settings.work_api.max_answer_bytes,
        )
        .with_limits(TextLimits {
            max_field_chars: settings.work_api.max_field_chars,
            max_list_items: settings.work_api.max_list_items,
        });
        let crm = C2sClient::new(
            base(&settings.c2s.base_url, "c2s")?,
            secret(&settings.c2s.token),
            Duration::from_millis(settings.c2s.timeout_ms),
            settings.c2s.max_answer_bytes,
        );
        let metrics = Arc::new(Metrics::new(
            settings.diretrix.price_per_call,
            settings.work_api.price_per_call,
        ));
        let resolver = Resolver::new(
            store.clone(),
            Arc::new(Guarded {
                inner: diretrix,
                guard: guards[0].clone(),
            }),
            Arc::new(Guarded {
                inner: work_api,
                guard: guards[1].clone(),
            }),
            Ttls {
                positive: settings.cache_ttl(),
                negative: settings.negative_ttl(),
                max_age: Duration::from_secs(settings.cache.max_age_days * 86_400),
            },
            settings.cache.max_bytes,
            metrics.clone(),
        )
        .with_coordination(
            Duration::from_millis(settings.database.lock_wait_ms),
            store.shared_secret().await?,
        );
        let subscription =
            crate::resolution::invalidation::subscribe(store.as_ref(), &resolver).await?;
        let renderer = match template(settings.message.template_path.as_deref())? {
            Some(source) => MessageRenderer::new(source)?,
            None => MessageRenderer::default_template(),
        }
        .with_max_bytes(settings.message.max_bytes);
        let description = match template(settings.message.description_template_path.as_deref())? {
            Some(source) => DescriptionRenderer::new(source)?,
            None => DescriptionRenderer::default_template(),
        }
        .with_max_chars(settings.c2s.description_max_chars);

        let addr = socket_addr(&settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let addr = socket_addr(&settings.metrics.host, settings.metrics.port);
        let metrics_listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;

        let inbox = GroupCommit::start_with(
            store.clone(),
            settings.server.group_commit_max_events,
            Duration::from_micros(settings.server.group_commit_wait_us),
            settings.server.group_commit_in_flight,
        );
        let state = AppState {
            settings: Arc::new(settings),
            store,
            inbox,
            resolver: Arc::new(resolver),
            crm: Arc::new(Guarded {
                inner: crm,
                guard: guards[2].clone(),
            }),
            guards: guards.into(),
            metrics,
            renderer: Arc::new(renderer),
            description: Arc::new(description),
            sandbox,
            wake: Arc::new(Notify::new()),
        };
        let warm = state.settings.cache.warm_on_start;
        if warm > 0 {
            let loaded = crate::operators::cache::warm(&state, warm).await?;
            tracing::info!(loaded, "memory cache warmed from the database");
        }
        Ok(Application {
            instance_lock,
            subscription,
            listener,
            metrics_listener,
            state,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address.
        self.listener.local_addr().expect("bound listener")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn metrics_port(&self) -> u16 {
        // A bound listener always has an address.
        self.metrics_listener
            .local_addr()
            .expect("bound listener")
            .port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancel this to stop the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves and works until the shutdown token is cancelled; returns after in-flight
    /// requests and events finished (or the drain timeout passed).
    ///
    /// Every task it starts is aborted if this future is dropped unfinished: aborting it is
    /// how tests stop an instance the way a `kill -9` would, with nothing drained.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            instance_lock,
            subscription,
            listener,
            metrics_listener,
            state,
            shutdown,
        } = self;
        let workers = AbortOnDropHandle::new(tokio::spawn(crate::worker::run(
            state.clone(),
            shutdown.child_token(),
        )));
        let _reconciling = AbortOnDropHandle::new(tokio::spawn(crate::reconcile::run(
            state.clone(),
            shutdown.child_token(),
        )));
        let _pruning = AbortOnDropHandle::new(tokio::spawn(crate::worker::prune(
            state.clone(),
            shutdown.child_token(),
        )));
        let _listening =
            AbortOnDropHandle::new(tokio::spawn(crate::resolution::invalidation::listen(
                state.store.clone(),
                state.resolver.clone(),
                state.metrics.clone(),
                subscription,
                shutdown.child_token(),
            )));
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(
                state.settings.server.header_read_timeout_secs,
            ),
            idle_timeout: Duration::from_secs(state.settings.server.idle_timeout_secs),
            grace: Duration::from_secs(state.settings.workers.drain_secs),
            max_header_bytes: state.settings.server.max_header_bytes,
        };
        let metrics_app = crate::operators::metrics_router(state.clone());
        let metrics_stop = shutdown.clone();
        let _metrics_serving = AbortOnDropHandle::new(tokio::spawn(async move {
            let served = serve(metrics_listener, metrics_app, limits, metrics_stop).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        }));
        tracing::info!(addr = %listener.local_addr()?, "listening");
        let app = crate::http::router(state);
        let served = serve(listener, app, limits, shutdown.clone()).await;
        // The server may stop on its own (an I/O error); workers must stop with it.
        shutdown.cancel();
        // A JoinError's text carries the panic message, which may hold personal data; the
        // panic hook has already logged where it happened.
        if let Err(e) = workers.await {
            tracing::error!(panicked = e.is_panic(), "worker task failed");
        }
        drop(instance_lock);
        served
    }
}

/// `host:port`, with brackets around an IPv6 host.
fn socket_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

/// An operator's template file, read whole, if one is configured; a file that cannot be read
/// stops the start with its path.
fn template(path: Option<&str>) -> Result<Option<String>, StartupError> {
    path.map(|path| {
        std::fs::read_to_string(path).map_err(|source| StartupError::TemplateFile {
            path: path.to_owned(),
            source,
        })
    })
    .transpose()
}

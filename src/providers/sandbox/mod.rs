//! The sandbox: a simulator of Diretrix, the Work API and the C2S API, served over real HTTP
//! on a loopback port inside the process, with deterministic fake people ([`fake`]).
//!
//! It lets `cargo run` work with nothing configured and gives demos and benchmarks a provider
//! that costs nothing. The real adapters talk to it exactly as they talk to the providers, so
//! the whole path (URLs, auth headers, status handling) runs. It keeps the messages the CRM
//! side received, newest last, bounded so a long demo cannot grow memory without limit. It
//! never runs in production unless explicitly enabled.

pub mod fake;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Messages kept for `GET /sandbox/messages`.
const KEPT_MESSAGES: usize = 1000;

/// One message the simulated CRM received.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxMessage {
    pub lead_id: String,
    pub body: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

impl SandboxState {
    /// The configured latency. None at all when it is zero: tokio's timer counts in whole
    /// milliseconds, so even a zero sleep can wait for the next tick, which is what a
    /// benchmark "at 0 ms" would then measure.
    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[derive(Clone)]
struct SandboxState {
    /// Received messages, oldest first, at most [`KEPT_MESSAGES`].
    messages: Arc<Mutex<VecDeque<SandboxMessage>>>,
    /// Added to every provider answer, to make the cost of a miss visible.
    latency: Duration,
}

/// A running sandbox. Dropping it does not stop it; the shutdown token does.
#[derive(Clone)]
pub struct Sandbox {
    /// Where the simulator listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    state: SandboxState,
}

impl Sandbox {
    /// Binds a loopback port and serves until `shutdown` is cancelled.
    pub async fn start(latency: Duration, shutdown: CancellationToken) -> std::io::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = SandboxState {
            messages: Arc::new(Mutex::new(VecDeque::new())),
            latency,
        };
        let app = router(state.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "sandbox stopped");
            }
        });
        Ok(Sandbox { addr, state })
    }

    pub fn base_url(&self, prefix: &str) -> url::Url {
        // The address is a socket address we just bound: always a valid URL.
        url::Url::parse(&format!("http://{}/{prefix}/", self.addr)).expect("loopback URL")
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<SandboxMessage> {
        self.state
            .messages
            .lock()
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn router(state: SandboxState) -> Router {
    Router::new()
        .route(
            "/diretrix/Consultas/Pessoa/Telefone/{phone}",
            get(diretrix_phone),
        )
        .route(
            "/diretrix/Consultas/Pessoa/Email/{email}",
            get(diretrix_email),
        )
        .route("/work/api", get(work_api))
        .route(
            "/c2s/integration/leads/{lead_id}/create_message",
            post(c2s_message),
        )
        .route("/c2s/integration/leads", post(c2s_create_lead))
        .with_state(state)
}

async fn diretrix_phone(
    State(state): State<SandboxState>,
    Path(phone): Path<String>,
) -> Json<serde_json::Value> {
    state.delay().await;
    Json(fake::diretrix_body(&format!("+55{phone}")))
}

async fn diretrix_email(
    State(state): State<SandboxState>,
    Path(email): Path<String>,
) -> Json<serde_json::Value> {
    state.delay().await;
    Json(fake::diretrix_body(&email))
}

#[derive(Deserialize)]
struct WorkQuery {
    consulta: Option<String>,
}

async fn work_api(
    State(state): State<SandboxState>,
    Query(q): Query<WorkQuery>,
) -> Json<serde_json::Value> {
    state.delay().await;
    match q.consulta {
        Some(cpf) => Json(fake::work_api_body(&cpf)),
        None => Json(serde_json::json!({"status": 400, "reason": "consulta is required"})),
    }
}

#[derive(Deserialize)]
struct MessageBody {
    body: String,
}

async fn c2s_message(
    State(state): State<SandboxState>,
    Path(lead_id): Path<String>,
    Json(msg): Json<MessageBody>,
) -> StatusCode {
    if let Ok(mut messages) = state.messages.lock() {
        if messages.len() == KEPT_MESSAGES {
            messages.pop_front();
        }
        messages.push_back(SandboxMessage {
            lead_id,
            body: msg.body,
            received_at: OffsetDateTime::now_utc(),
        });
    }
    StatusCode::CREATED
}

async fn c2s_create_lead(
    State(state): State<SandboxState>,
) -> (StatusCode, Json<serde_json::Value>) {
    let id = state.messages.lock().map(|m| m.len()).unwrap_or(0) + 1;
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"data": {"type": "lead", "id": format!("sandbox-{id}")}})),
    )
}

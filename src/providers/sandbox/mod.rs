//! The sandbox: a simulator of Diretrix, the Work API and the C2S API, served over real HTTP
//! on a loopback port inside the process, with deterministic fake people ([`fake`]).
//!
//! It lets `cargo run` work with nothing configured and gives demos and benchmarks a provider
//! that costs nothing. The real adapters talk to it exactly as they talk to the providers, so
//! the whole path (URLs, auth headers, status handling) runs. The CRM side keeps the messages
//! it received, the leads created through it (which it also lists, like C2S's
//! `GET /integration/leads`) and the webhook subscriptions, each bounded so a long demo cannot
//! grow memory without limit. It never runs in production unless explicitly enabled.

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

/// Leads created through the simulated CRM that it keeps (and lists).
const KEPT_LEADS: usize = 1000;

/// Webhook subscriptions kept.
const KEPT_SUBSCRIPTIONS: usize = 100;

/// One message the simulated CRM received.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxMessage {
    pub lead_id: String,
    pub body: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

/// A webhook subscription the simulated CRM received.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxSubscription {
    pub url: String,
    pub events: Vec<String>,
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
    /// Created leads as C2S lists them (`id`, `attributes`), oldest first, at most
    /// [`KEPT_LEADS`]; and how many were ever created, for the next id.
    leads: Arc<Mutex<(VecDeque<serde_json::Value>, u64)>>,
    /// Subscriptions, oldest first, at most [`KEPT_SUBSCRIPTIONS`].
    subscriptions: Arc<Mutex<VecDeque<SandboxSubscription>>>,
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
            leads: Arc::new(Mutex::new((VecDeque::new(), 0))),
            subscriptions: Arc::new(Mutex::new(VecDeque::new())),
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

    /// The leads created so far, oldest first, as the CRM lists them.
    pub fn leads(&self) -> Vec<serde_json::Value> {
        self.state
            .leads
            .lock()
            .map(|l| l.0.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The webhook subscriptions received so far, oldest first.
    pub fn subscriptions(&self) -> Vec<SandboxSubscription> {
        self.state
            .subscriptions
            .lock()
            .map(|s| s.iter().cloned().collect())
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
        .route(
            "/c2s/integration/leads",
            post(c2s_create_lead).get(c2s_list_leads),
        )
        .route(
            "/c2s/integration/webhook/leads/subscribe",
            post(c2s_subscribe),
        )
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

/// Creates a lead from a JSON:API body and answers its id; the lead is kept with a customer
/// made of the attributes, the way C2S lists leads.
async fn c2s_create_lead(
    State(state): State<SandboxState>,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let attributes = body
        .pointer("/data/attributes")
        .cloned()
        .unwrap_or_default();
    let text = |field: &str| attributes.get(field).cloned().unwrap_or_default();
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let Ok(mut leads) = state.leads.lock() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({})),
        );
    };
    leads.1 += 1;
    let id = format!("sandbox-{}", leads.1);
    let lead = serde_json::json!({
        "id": id,
        "type": "lead",
        "attributes": {
            "customer": {"name": text("name"), "phone": text("phone"), "email": text("email")},
            "description": text("description"),
            "source": text("source"),
            "product": {"description": text("product")},
            "created_at": now,
            "updated_at": now,
        }
    });
    if leads.0.len() == KEPT_LEADS {
        leads.0.pop_front();
    }
    leads.0.push_back(lead);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"data": {"type": "lead", "id": id}})),
    )
}

#[derive(Deserialize)]
struct ListQuery {
    page: Option<usize>,
    perpage: Option<usize>,
    updated_gte: Option<String>,
    updated_lt: Option<String>,
}

/// Lists the kept leads, newest update first, filtered by `updated_gte`/`updated_lt` (RFC
/// 3339), at most 50 a page, like C2S.
async fn c2s_list_leads(
    State(state): State<SandboxState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let bound = |raw: &Option<String>| -> Result<Option<OffsetDateTime>, StatusCode> {
        raw.as_deref()
            .map(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| StatusCode::UNPROCESSABLE_ENTITY)
            })
            .transpose()
    };
    let (gte, lt) = (bound(&q.updated_gte)?, bound(&q.updated_lt)?);
    let perpage = q.perpage.unwrap_or(50);
    if perpage == 0 || perpage > 50 {
        return Err(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let page = q.page.unwrap_or(1).max(1);
    let updated = |lead: &serde_json::Value| {
        lead.pointer("/attributes/updated_at")
            .and_then(|t| t.as_str())
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
    };
    let mut matching: Vec<serde_json::Value> = state
        .leads
        .lock()
        .map(|l| l.0.iter().cloned().collect())
        .unwrap_or_default();
    matching.retain(|lead| {
        updated(lead).is_some_and(|t| gte.is_none_or(|g| t >= g) && lt.is_none_or(|l| t < l))
    });
    // Newest first; created in order, so a stable reverse keeps ties in creation order.
    matching.reverse();
    matching.sort_by_key(|lead| std::cmp::Reverse(updated(lead)));
    let total = matching.len();
    let data: Vec<serde_json::Value> = matching
        .into_iter()
        .skip((page - 1) * perpage)
        .take(perpage)
        .collect();
    Ok(Json(serde_json::json!({
        "data": data,
        "meta": {"total": total, "page": page, "perpage": perpage}
    })))
}

async fn c2s_subscribe(
    State(state): State<SandboxState>,
    Json(subscription): Json<SandboxSubscription>,
) -> StatusCode {
    if let Ok(mut subscriptions) = state.subscriptions.lock() {
        subscriptions.retain(|s| s.url != subscription.url);
        if subscriptions.len() == KEPT_SUBSCRIPTIONS {
            subscriptions.pop_front();
        }
        subscriptions.push_back(subscription);
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::c2s::C2sClient;
    use crate::providers::{Crm, LeadQuery, NewCrmLead};
    use secrecy::SecretString;

    #[tokio::test]
    async fn the_sandbox_crm_creates_lists_and_subscribes_through_the_real_client() {
        let shutdown = CancellationToken::new();
        let sandbox = Sandbox::start(Duration::ZERO, shutdown.clone())
            .await
            .unwrap();
        let client = C2sClient::new(
            sandbox.base_url("c2s"),
            SecretString::from("sandbox"),
            Duration::from_secs(5),
            1 << 20,
        );
        let mut ids = Vec::new();
        for name in ["Ana Lima", "Bruno Souza", "Carla Dias"] {
            let lead = NewCrmLead {
                name: name.into(),
                phone: Some("+5511912345678".into()),
                source: "Google Ads".into(),
                description: "d".into(),
                ..NewCrmLead::default()
            };
            ids.push(client.create_lead(&lead).await.unwrap());
        }
        assert_eq!(ids[0].as_str(), "sandbox-1");
        assert_eq!(ids[2].as_str(), "sandbox-3");
        let query = |page, perpage| LeadQuery {
            updated_gte: Some(OffsetDateTime::now_utc() - Duration::from_secs(60)),
            updated_lt: None,
            page,
            perpage,
        };
        let first = client.list_leads(&query(1, 2)).await.unwrap();
        assert_eq!(first.total, Some(3));
        assert_eq!(first.leads.len(), 2);
        assert!(first.unreadable.is_empty());
        let second = client.list_leads(&query(2, 2)).await.unwrap();
        let mut listed: Vec<String> = first
            .leads
            .iter()
            .chain(&second.leads)
            .map(|l| l.lead.lead_id.as_str().to_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, ["sandbox-1", "sandbox-2", "sandbox-3"]);
        assert_eq!(
            first.leads[0].lead.customer.phone.as_ref().unwrap().e164(),
            "+5511912345678"
        );

        let url = url::Url::parse("http://localhost:8080/api/v1/webhooks/c2s").unwrap();
        client.subscribe(&url, &["on_create_lead"]).await.unwrap();
        client
            .subscribe(&url, &["on_create_lead", "on_update_lead"])
            .await
            .unwrap();
        assert_eq!(
            sandbox.subscriptions(),
            [SandboxSubscription {
                url: url.to_string(),
                events: vec!["on_create_lead".into(), "on_update_lead".into()],
            }]
        );
        shutdown.cancel();
    }
}

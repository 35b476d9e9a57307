//! The outside APIs, one adapter module each, behind one trait per provider.
//!
//! A changed contract touches one file here. Adapters translate HTTP into domain answers and
//! classify failures ([`ProviderError`]); they do not retry, cache or store: resolution and
//! delivery own those policies. No error text built here contains a URL, a credential or
//! personal data, because reqwest's errors embed the request URL (the Work API token travels
//! in the query string).

pub mod c2s;
pub mod diretrix;
pub mod guard;
pub mod sandbox;
pub mod work_api;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{ContactKey, Cpf, LeadId};
use crate::providers::work_api::WorkApiAnswer;

/// What went wrong talking to a provider, by class: the class decides retry or give up.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    #[error("{provider}: timed out")]
    Timeout { provider: &'static str },
    #[error("{provider}: rate limited (429)")]
    RateLimited {
        provider: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{provider}: server error {status}")]
    Server {
        provider: &'static str,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{provider}: rejected with {status}")]
    Client { provider: &'static str, status: u16 },
    #[error("{provider}: connection failed")]
    Connect { provider: &'static str },
    #[error("{provider}: unreadable answer: {detail}")]
    Decode {
        provider: &'static str,
        detail: String,
    },
    /// A 3xx: redirects are never followed (a 302 turned into a bodiless GET once looked like
    /// a delivered message, and a 307 elsewhere would carry personal data off-site).
    #[error("{provider}: answered with redirect {status}, not followed")]
    Redirect { provider: &'static str, status: u16 },
    /// A well-formed answer about someone else than asked (another CPF, or a CPF with bad
    /// check digits): the provider cannot be trusted on this call, so nothing is kept.
    #[error("{provider}: answer does not match the request: {detail}")]
    Mismatch {
        provider: &'static str,
        detail: &'static str,
    },
    /// The request was sent and no answer came (a timeout or a dropped connection after
    /// sending): it may or may not have taken effect.
    #[error("{provider}: request sent, no answer (outcome unknown)")]
    Unanswered { provider: &'static str },
    /// The provider's circuit breaker is open after consecutive failures: not called at all.
    #[error("{provider}: circuit open after repeated failures, not called")]
    CircuitOpen {
        provider: &'static str,
        retry_after: Duration,
    },
}

impl ProviderError {
    /// Worth trying again later: timeouts, 429, 5xx and connection failures.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Timeout { .. }
                | ProviderError::RateLimited { .. }
                | ProviderError::Server { .. }
                | ProviderError::Connect { .. }
                | ProviderError::CircuitOpen { .. }
        )
    }

    /// The provider's own word on when to come back.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Server { retry_after, .. } => *retry_after,
            ProviderError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Short class name for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::RateLimited { .. } => "429",
            ProviderError::Server { .. } => "5xx",
            ProviderError::Client { .. } => "4xx",
            ProviderError::Connect { .. } => "connect",
            ProviderError::Decode { .. } => "decode",
            ProviderError::Redirect { .. } => "3xx",
            ProviderError::Mismatch { .. } => "mismatch",
            ProviderError::Unanswered { .. } => "unanswered",
            ProviderError::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// For a request that changes something (the CRM POST): an error after the request left
    /// means its outcome is unknown, unlike a connection that never opened.
    pub(crate) fn from_reqwest_after_send(
        provider: &'static str,
        e: &reqwest::Error,
    ) -> ProviderError {
        if e.is_connect() {
            ProviderError::Connect { provider }
        } else {
            ProviderError::Unanswered { provider }
        }
    }

    /// Classifies a reqwest error without keeping its text (which holds the URL).
    pub(crate) fn from_reqwest(provider: &'static str, e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout { provider }
        } else if e.is_decode() || e.is_body() {
            ProviderError::Decode {
                provider,
                detail: "body could not be read".into(),
            }
        } else {
            ProviderError::Connect { provider }
        }
    }

    /// Classifies a non-2xx status.
    pub(crate) fn from_status(
        provider: &'static str,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
    ) -> ProviderError {
        let retry_after = retry_after(headers);
        if status.is_redirection() {
            ProviderError::Redirect {
                provider,
                status: status.as_u16(),
            }
        } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            ProviderError::RateLimited {
                provider,
                retry_after,
            }
        } else if status.is_server_error() {
            ProviderError::Server {
                provider,
                status: status.as_u16(),
                retry_after,
            }
        } else {
            ProviderError::Client {
                provider,
                status: status.as_u16(),
            }
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs and ignored), capped so a
/// misbehaving provider cannot park an event for days.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

pub use crate::domain::candidates::{Candidate, Candidates, CpfCandidate};

/// Contact -> CPF (Diretrix).
#[async_trait]
pub trait CpfLookup: Send + Sync + 'static {
    /// The first valid person the provider lists for this contact, or `None` when nobody:
    /// the choice made before a lead's name is known.
    async fn lookup(&self, key: &ContactKey) -> Result<Option<CpfCandidate>, ProviderError>;

    /// Every valid candidate the provider lists for this contact, people and companies, in
    /// its order (empty when nobody). Adapters that see several candidates implement it and
    /// answer `lookup` with [`Candidates::first_person`]; the default suits a lookup that
    /// only ever knows one person.
    async fn lookup_all(&self, key: &ContactKey) -> Result<Candidates, ProviderError> {
        Ok(self
            .lookup(key)
            .await?
            .map(Candidates::one)
            .unwrap_or_default())
    }
}

/// CPF -> person data (Work API).
#[async_trait]
pub trait PersonData: Send + Sync + 'static {
    /// The raw answer and what it means; an in-body 404 is `NotFound`.
    async fn fetch(&self, cpf: &Cpf) -> Result<(serde_json::Value, WorkApiAnswer), ProviderError>;
}

/// The CRM's API (C2S).
#[async_trait]
pub trait Crm: Send + Sync + 'static {
    /// Posts a message on a lead. Any 2xx is success.
    async fn post_message(&self, lead: &LeadId, body: &str) -> Result<(), ProviderError>;

    /// Creates a lead and answers its id. An error after the request left is
    /// [`ProviderError::Unanswered`]: the lead may exist.
    async fn create_lead(&self, lead: &NewCrmLead) -> Result<LeadId, ProviderError>;

    /// One page of leads, newest update first.
    async fn list_leads(&self, query: &LeadQuery) -> Result<LeadPage, ProviderError>;

    /// Registers `url` as the webhook for `events` (`on_create_lead`, …).
    async fn subscribe(&self, url: &url::Url, events: &[&str]) -> Result<(), ProviderError>;
}

/// A lead to create in the CRM. Personal data: `Debug` shows none of it.
#[derive(Clone, Default)]
pub struct NewCrmLead {
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub description: String,
    /// Where the lead came from, as the CRM shows it (`Google Ads`).
    pub source: String,
    pub product: Option<String>,
    pub seller_id: Option<String>,
}

impl std::fmt::Debug for NewCrmLead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCrmLead")
            .field("source", &self.source)
            .field("phone", &self.phone.is_some())
            .field("email", &self.email.is_some())
            .field("description_chars", &self.description.chars().count())
            .finish_non_exhaustive()
    }
}

/// Most leads the CRM lists per page.
pub const MAX_PER_PAGE: u32 = 50;

/// Which leads to list: updated in `[updated_gte, updated_lt)`, one page of at most
/// [`MAX_PER_PAGE`].
#[derive(Debug, Clone)]
pub struct LeadQuery {
    pub updated_gte: Option<time::OffsetDateTime>,
    pub updated_lt: Option<time::OffsetDateTime>,
    /// From 1.
    pub page: u32,
    pub perpage: u32,
}

/// A listed lead: the resource as the CRM sent it (what the inbox stores, as if a webhook had
/// brought it) and the same resource read the way the webhook is read.
#[derive(Debug, Clone)]
pub struct ListedLead {
    pub payload: serde_json::Value,
    pub lead: crate::intake::c2s::C2sEvent,
}

/// One page of listed leads.
#[derive(Debug, Clone, Default)]
pub struct LeadPage {
    pub leads: Vec<ListedLead>,
    /// Leads on the page that do not read as the webhook's lead resource (by position, no
    /// values): skipped, not fatal to the page.
    pub unreadable: Vec<crate::intake::c2s::ShapeError>,
    /// Leads matching the query, when the CRM says.
    pub total: Option<u64>,
    pub page: u32,
    pub perpage: u32,
}

/// Sends a lookup request. A 404 is the providers' way of saying "nobody" (`Ok(None)`); any
/// other non-2xx is classified into an error.
pub(crate) async fn send_lookup(
    provider: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Option<reqwest::Response>, ProviderError> {
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| ProviderError::from_reqwest(provider, &e))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(ProviderError::from_status(
            provider,
            status,
            response.headers(),
        ));
    }
    Ok(Some(response))
}

/// Reads at most `limit` bytes of body, streamed, so a huge answer is refused without being
/// held in memory. A body that stalls past the client's timeout is a timeout (transient),
/// not an unreadable answer.
pub(crate) async fn read_body(
    provider: &'static str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = || ProviderError::Decode {
        provider,
        detail: format!("answer larger than {limit} bytes"),
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ProviderError::from_reqwest(provider, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a JSON body of at most `limit` bytes; `expected` says what should have come,
/// without echoing what did.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    provider: &'static str,
    response: reqwest::Response,
    limit: usize,
    expected: &str,
) -> Result<T, ProviderError> {
    let body = read_body(provider, response, limit).await?;
    let unreadable = || ProviderError::Decode {
        provider,
        detail: format!("expected {expected}"),
    };
    let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| unreadable())?;
    // A NUL cannot be stored (Postgres refuses it in text and JSON); failing the store after
    // paying would pay again on every attempt, so it goes before anything sees the answer.
    crate::domain::text::strip_nul(&mut value);
    serde_json::from_value(value).map_err(|_| unreadable())
}

/// A provider's HTTP client: rustls with the system roots, redirects never followed (a 3xx is
/// an error like any other non-2xx), each request bounded by the provider's timeout (the
/// whole exchange) and its connect by that timeout or 5 s. The client is built on the first
/// request, not with the provider: building one reads and parses the whole system root store,
/// about 25 ms, and three providers building theirs at startup made most of a cold start.
#[derive(Clone)]
pub(crate) struct Http {
    client: Arc<OnceLock<reqwest::Client>>,
    timeout: Duration,
}

impl Http {
    pub(crate) fn get(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client().get(url).timeout(self.timeout)
    }

    pub(crate) fn post(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client().post(url).timeout(self.timeout)
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(self.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!("enricher/", env!("CARGO_PKG_VERSION")))
                .build()
                // Building fails only when the TLS backend cannot initialise, which is a
                // broken binary, not a runtime condition.
                .expect("the HTTP client must build")
        })
    }
}

/// The HTTP client of a provider with this `timeout` (see [`Http`]).
pub(crate) fn http_client(timeout: Duration) -> Http {
    Http {
        client: Arc::default(),
        timeout,
    }
}

//! The one place everything shared lives: no globals, so tests run many apps in one process.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::intake::group_commit::GroupCommit;
use crate::message::MessageRenderer;
use crate::message::description::DescriptionRenderer;
use crate::metrics::Metrics;
use crate::providers::Crm;
use crate::providers::guard::Guard;
use crate::providers::sandbox::Sandbox;
use crate::resolution::Resolver;
use crate::store::DynStore;

#[derive(Clone)]
pub struct AppState {
    /// Effective settings, read once at start.
    pub settings: Arc<Settings>,
    /// Inbox and person data; closed when the last clone drops, after workers drained.
    pub store: DynStore,
    /// How intake stores webhook events: grouped with concurrent requests' in one commit.
    pub inbox: GroupCommit,
    /// Tiers and single flight for contacts and CPFs.
    pub resolver: Arc<Resolver>,
    /// Where messages are posted.
    pub crm: Arc<dyn Crm>,
    /// Each provider's circuit breaker and limits (Diretrix, Work API, C2S), for `/ready`
    /// and the metrics.
    pub guards: Arc<[Arc<Guard>]>,
    /// Counters and gauges rendered on the metrics port.
    pub metrics: Arc<Metrics>,
    /// The message template, compiled once.
    pub renderer: Arc<MessageRenderer>,
    /// The description template of leads created in the CRM (Google Ads), compiled once.
    pub description: Arc<DescriptionRenderer>,
    /// The in-process provider simulator, when enabled; stops with the app's shutdown token.
    pub sandbox: Option<Sandbox>,
    /// Intake pokes this after storing events so idle workers start at once instead of at
    /// their next poll.
    pub wake: Arc<Notify>,
}

impl AppState {
    pub fn wake_workers(&self) {
        // notify_one keeps a permit when nobody waits, so a wake-up is never lost.
        self.wake.notify_one();
    }
}

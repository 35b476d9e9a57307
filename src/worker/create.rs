//! Creating a lead in the CRM for a lead the CRM does not have yet (the Google Ads flow):
//! enrich as for a C2S lead, render the description, then create it once.
//!
//! "Once" rests on the intent the store records per source lead before each call
//! ([`crate::store::Store::claim_crm_creation`]): the first claim inserts it, the CRM's id
//! replaces it after the answer, and a call that left no id (unanswered, or the process
//! stopped between the call and the record) counts against the same allowance as an
//! unanswered message POST: `1 + delivery.unknown_outcome_reposts` calls in all, then the
//! event is dead-lettered for an operator to check the CRM.

use time::OffsetDateTime;

use crate::delivery::{Reposted, UNKNOWN_OUTCOME};
use crate::event::{LeadEvent, NewCrmLead};
use crate::message::description::Description;
use crate::message::{Finding, Via};
use crate::providers::ProviderError;
use crate::retry::{after_error, after_failure};
use crate::state::AppState;
use crate::store::{ClaimedEvent, CrmCreation, Finish, Lookup, Outcome, contact_set};

/// The name a lead gets when the form asked for none (the CRM requires one).
const UNNAMED: &str = "Lead sem nome";

/// Carries one event whose destination is a new CRM lead to its end.
pub(super) async fn create_crm_lead(
    state: &AppState,
    event: &ClaimedEvent,
    parsed: &LeadEvent,
    new: &NewCrmLead,
) -> Finish {
    let source = parsed.source;
    let key = &parsed.lead;
    let set = contact_set(&parsed.customer.keys());
    let store_failed = |e: crate::store::StoreError| {
        after_failure(
            &state.settings.delivery,
            event,
            e.is_transient(),
            None,
            format!("store: {e}"),
        )
    };
    let done = |outcome: Outcome| {
        state
            .metrics
            .crm_lead(source.as_str(), outcome.as_str(), new.is_test);
        Finish::Done {
            outcome,
            contact_set: Some(set.clone()),
        }
    };
    // A replay, or the lead stored again: created already, nothing to buy or call.
    match state.store.crm_creation(source, key).await {
        Ok(Some((Some(crm_lead), _))) => {
            tracing::info!(crm_lead = %crm_lead, "lead already created in the CRM");
            return done(Outcome::AlreadyCreated);
        }
        Ok(_) => {}
        Err(e) => return store_failed(e),
    }

    // Rendered once: a retry sends the same description without resolving again.
    let description = match &event.message {
        Some(d) => d.clone(),
        None => match describe(state, event, parsed, new).await {
            Ok(d) => d,
            Err(finish) => return finish,
        },
    };

    let max_calls = 1 + state.settings.delivery.unknown_outcome_reposts;
    let lease = std::time::Duration::from_secs(state.settings.workers.lease_secs);
    let attempt = match state
        .store
        .claim_crm_creation(source, key, max_calls, lease, OffsetDateTime::now_utc())
        .await
    {
        Ok(CrmCreation::Claimed { attempt }) => attempt,
        Ok(CrmCreation::Created(crm_lead)) => {
            tracing::info!(crm_lead = %crm_lead, "lead already created in the CRM");
            return done(Outcome::AlreadyCreated);
        }
        // Another worker is calling right now (an operator's replay beside the original):
        // wait for its answer without spending an attempt.
        Ok(CrmCreation::Busy { until }) => {
            return Finish::Park {
                at: until,
                error: "another worker is creating this lead".into(),
            };
        }
        Ok(CrmCreation::Exhausted { attempts }) => {
            tracing::warn!(attempts, "lead creation outcome unknown; allowance spent");
            state
                .metrics
                .crm_lead(source.as_str(), "unknown", new.is_test);
            return Finish::Dead {
                reason: UNKNOWN_OUTCOME.into(),
            };
        }
        Err(e) => return store_failed(e),
    };
    if attempt > 1 {
        tracing::warn!(
            attempt,
            "creating the lead again: an earlier call left no answer"
        );
    }

    let lead = crate::providers::NewCrmLead {
        name: parsed
            .customer
            .name
            .clone()
            .unwrap_or_else(|| UNNAMED.to_owned()),
        phone: parsed.customer.phone.as_ref().map(|p| p.e164().to_owned()),
        email: parsed
            .customer
            .email
            .as_ref()
            .map(|e| e.as_str().to_owned()),
        description,
        source: new.origin.clone(),
        product: new.product.clone(),
        seller_id: new.seller_id.clone(),
    };
    match state.crm.create_lead(&lead).await {
        Ok(crm_lead) => {
            if let Err(e) = state.store.record_crm_created(source, key, &crm_lead).await {
                // The lead exists; without its record the intent stays and a retry finds the
                // allowance spent (or takes one of its reposts): never a silent second copy.
                tracing::error!(crm_lead = %crm_lead, error = %e, "lead created but its id not recorded");
                return store_failed(e);
            }
            tracing::info!(crm_lead = %crm_lead, is_test = new.is_test, "lead created in the CRM");
            done(Outcome::Created)
        }
        // Sent and no usable answer: the lead may exist. The intent stays; the next attempt
        // takes another call only within the allowance.
        Err(e @ (ProviderError::Unanswered { .. } | ProviderError::Decode { .. })) => {
            state
                .metrics
                .crm_lead(source.as_str(), e.class(), new.is_test);
            tracing::warn!(error = %e, attempt, "lead creation outcome unknown");
            if attempt < max_calls {
                after_error(&state.settings.delivery, event, &Reposted(e))
            } else {
                Finish::Dead {
                    reason: UNKNOWN_OUTCOME.into(),
                }
            }
        }
        Err(e) => {
            state
                .metrics
                .crm_lead(source.as_str(), e.class(), new.is_test);
            tracing::warn!(error = %e, class = e.class(), "lead creation failed");
            // The CRM answered no (or was never reached): the call does not count.
            if let Err(store) = state.store.release_crm_creation(source, key).await {
                tracing::warn!(error = %store, "giving back the creation claim failed");
            }
            after_error(&state.settings.delivery, event, &e)
        }
    }
}

/// Enriches the lead and renders its description, kept on the event for retries.
async fn describe(
    state: &AppState,
    event: &ClaimedEvent,
    parsed: &LeadEvent,
    new: &NewCrmLead,
) -> Result<String, Finish> {
    let (keys, set) = super::contacts(parsed);
    let (findings, links) = match &parsed.cpf {
        // The form gave a valid CPF: no contact lookup, the person is read for that CPF and
        // every contact of the lead is shown as leading to them.
        Some(cpf) => {
            let person = match state.resolver.person(cpf).await {
                Ok((Lookup::Found(p), _)) => Some(p),
                Ok((Lookup::NotFound, _)) => None,
                Err(e) => return Err(after_error(&state.settings.delivery, event, &e)),
            };
            let findings = keys
                .iter()
                .map(|key| Finding {
                    via: Via::from(key),
                    person: person.clone(),
                    // The form's own CPF: the lead's person by its own word, nothing chosen.
                    quality: crate::domain::name::Match::Confirmed,
                    companies: Vec::new(),
                })
                .collect();
            let links = keys
                .iter()
                .map(|key| crate::store::LeadLink {
                    cpf: cpf.clone(),
                    via: key.kind(),
                })
                .collect();
            (findings, links)
        }
        None if keys.is_empty() => (Vec::new(), Vec::new()),
        None => super::resolve(
            state,
            &parsed.lead,
            parsed.customer.name.as_deref(),
            &keys,
            None,
            false,
        )
        .await
        .map_err(|e| after_error(&state.settings.delivery, event, &e))?,
    };
    let enrichment = if findings.is_empty() {
        None
    } else {
        Some(
            state
                .renderer
                .render(parsed.customer.name.as_deref(), &findings)
                .map_err(|e| Finish::Dead {
                    reason: format!("message: {e}"),
                })?,
        )
    };
    let fields: Vec<(String, String)> = new
        .fields
        .iter()
        .map(|f| (f.label.clone(), f.value.clone()))
        .collect();
    let description = state
        .description
        .render(&Description {
            is_test: new.is_test,
            campaign_id: new.campaign_id,
            form_id: new.form_id,
            cpf: parsed.cpf.as_ref().map(|c| c.formatted()),
            fields: &fields,
            enrichment: enrichment.as_deref(),
        })
        .map_err(|e| Finish::Dead {
            reason: format!("description: {e}"),
        })?;
    state
        .store
        .save_rendered(event, &set, &description, &links)
        .await
        .map_err(|e| {
            after_failure(
                &state.settings.delivery,
                event,
                e.is_transient(),
                None,
                format!("store: {e}"),
            )
        })?;
    Ok(description)
}

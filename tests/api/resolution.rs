//! The resolver's tiers against a real store and fake providers: memory, database, provider,
//! remembered "nobody", errors never cached, and single flight proven without timing (the
//! fake provider holds its answer until every caller is known to be waiting).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use enricher::domain::{ContactKey, Cpf, Phone};
use enricher::metrics::{LookupKind, Metrics};
use enricher::providers::work_api::WorkApiAnswer;
use enricher::providers::{CpfCandidate, CpfLookup, PersonData, ProviderError};
use enricher::resolution::{Resolver, Tier, Ttls};
use enricher::store::{DynStore, Lookup};
use tokio::sync::watch;

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::CPF;

type ContactAnswer = Result<Option<CpfCandidate>, ProviderError>;
type PersonAnswer = Result<(serde_json::Value, WorkApiAnswer), ProviderError>;

/// Holds a provider's answer until `callers` resolve calls are waiting.
#[derive(Clone)]
struct Gate {
    waiting: watch::Receiver<usize>,
    callers: usize,
}

impl Gate {
    async fn pass(&self) {
        let mut waiting = self.waiting.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            waiting.wait_for(|n| *n >= self.callers),
        )
        .await
        .unwrap_or_else(|_| panic!("{} callers never all waited", self.callers))
        .unwrap();
    }
}

/// A provider stand-in: answers from a script in order, counts its calls, and panics on a
/// call the script did not foresee (a purchase the test says must not happen).
struct Fake<A> {
    calls: AtomicUsize,
    script: Mutex<VecDeque<A>>,
    gate: Option<Gate>,
}

impl<A> Fake<A> {
    fn new(script: impl IntoIterator<Item = A>) -> Arc<Fake<A>> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            script: Mutex::new(script.into_iter().collect()),
            gate: None,
        })
    }

    fn gated(script: impl IntoIterator<Item = A>, gate: Gate) -> Arc<Fake<A>> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            script: Mutex::new(script.into_iter().collect()),
            gate: Some(gate),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn answer(&self) -> A {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("provider call {call} was not expected"))
    }
}

#[async_trait]
impl CpfLookup for Fake<ContactAnswer> {
    async fn lookup(&self, _key: &ContactKey) -> ContactAnswer {
        self.answer().await
    }
}

#[async_trait]
impl PersonData for Fake<PersonAnswer> {
    async fn fetch(&self, _cpf: &Cpf) -> PersonAnswer {
        self.answer().await
    }
}

/// Counts a future as waiting the first time it is polled without finishing: from then on
/// its call has started and has not been answered.
struct Waiting<F: Future> {
    inner: Pin<Box<F>>,
    counted: bool,
    waiting: watch::Sender<usize>,
}

impl<F: Future> Future for Waiting<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let poll = self.inner.as_mut().poll(cx);
        if poll.is_pending() && !self.counted {
            self.counted = true;
            self.waiting.send_modify(|n| *n += 1);
        }
        poll
    }
}

fn waiting<F: Future>(inner: F, waiting: &watch::Sender<usize>) -> Waiting<F> {
    Waiting {
        inner: Box::pin(inner),
        counted: false,
        waiting: waiting.clone(),
    }
}

const TTLS: Ttls = Ttls {
    positive: Duration::from_secs(86_400),
    negative: Duration::from_secs(3_600),
    max_age: Duration::from_secs(30 * 86_400),
};

struct Setup {
    resolver: Resolver,
    metrics: Arc<Metrics>,
}

fn resolver(
    store: &DynStore,
    diretrix: &Arc<Fake<ContactAnswer>>,
    work_api: &Arc<Fake<PersonAnswer>>,
    ttls: Ttls,
) -> Setup {
    let metrics = Arc::new(Metrics::new(1.0, 1.0));
    let resolver = Resolver::new(
        store.clone(),
        diretrix.clone(),
        work_api.clone(),
        ttls,
        16 * 1024 * 1024,
        metrics.clone(),
    );
    Setup { resolver, metrics }
}

fn key() -> ContactKey {
    ContactKey::Phone(Phone::parse("(11) 98765-4321").unwrap())
}

fn cpf() -> Cpf {
    Cpf::parse(CPF).unwrap()
}

fn found_contact() -> ContactAnswer {
    Ok(Some(CpfCandidate {
        cpf: cpf(),
        name: Some("MARIA APARECIDA SOUZA".to_owned()),
    }))
}

fn found_person() -> PersonAnswer {
    let raw = fixture("work_api_person.json");
    let answer = WorkApiAnswer::parse(&raw).unwrap();
    assert!(matches!(answer, WorkApiAnswer::Found(_)));
    Ok((raw, answer))
}

fn no_contacts() -> Arc<Fake<ContactAnswer>> {
    Fake::new([])
}

fn no_people() -> Arc<Fake<PersonAnswer>> {
    Fake::new([])
}

fn server_error(provider: &'static str) -> ProviderError {
    ProviderError::Server {
        provider,
        status: 500,
        retry_after: None,
    }
}

both_backends!(
    a_contact_is_bought_once_stored_before_it_is_returned_then_answered_by_memory_and_the_database,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let diretrix = Fake::new([found_contact()]);
        let first = resolver(&store, &diretrix, &no_people(), TTLS);

        let (answer, tier) = first.resolver.contact(&key()).await.unwrap();
        assert_eq!((answer, tier), (Lookup::Found(cpf()), Tier::Provider));
        assert_eq!(
            store.find_contact(&key()).await.unwrap(),
            Some(Lookup::Found(cpf())),
            "stored when bought"
        );
        let (answer, tier) = first.resolver.contact(&key()).await.unwrap();
        assert_eq!((answer, tier), (Lookup::Found(cpf()), Tier::Memory));

        // A new instance on the same database: memory is empty, the database answers.
        let second = resolver(&store, &no_contacts(), &no_people(), TTLS);
        let (answer, tier) = second.resolver.contact(&key()).await.unwrap();
        assert_eq!((answer, tier), (Lookup::Found(cpf()), Tier::Database));
        let (_, tier) = second.resolver.contact(&key()).await.unwrap();
        assert_eq!(tier, Tier::Memory);

        assert_eq!(diretrix.calls(), 1);
        let counts = first.metrics.tier_counts(LookupKind::Contact);
        assert_eq!((counts.provider_call, counts.memory_hit), (1, 1));
        let counts = second.metrics.tier_counts(LookupKind::Contact);
        assert_eq!((counts.database_hit, counts.memory_hit), (1, 1));
    }
);

both_backends!(
    a_nobody_answer_is_remembered_in_memory_and_in_the_database_and_counted_as_a_negative_hit,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let diretrix = Fake::new([Ok(None)]);
        let first = resolver(&store, &diretrix, &no_people(), TTLS);

        let (answer, tier) = first.resolver.contact(&key()).await.unwrap();
        assert_eq!((answer, tier), (Lookup::NotFound, Tier::Provider));
        assert_eq!(
            store.find_contact(&key()).await.unwrap(),
            Some(Lookup::NotFound)
        );
        let (answer, tier) = first.resolver.contact(&key()).await.unwrap();
        assert_eq!((answer, tier), (Lookup::NotFound, Tier::Memory));

        let second = resolver(&store, &no_contacts(), &no_people(), TTLS);
        let (answer, tier) = second.resolver.contact(&key()).await.unwrap();
        assert_eq!((answer, tier), (Lookup::NotFound, Tier::Database));

        assert_eq!(diretrix.calls(), 1);
        let counts = first.metrics.tier_counts(LookupKind::Contact);
        assert_eq!((counts.provider_call, counts.negative_hit), (1, 1));
        assert_eq!(counts.memory_hit, 0, "a nobody is never a memory hit");
        assert_eq!(
            second.metrics.tier_counts(LookupKind::Contact).negative_hit,
            1
        );
        assert_eq!(store.party_counts().await.unwrap().parties, 0);
    }
);

both_backends!(
    a_provider_failure_is_neither_remembered_nor_stored_and_the_next_call_pays_again,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let diretrix = Fake::new([Err(server_error("diretrix")), found_contact()]);
        let work_api = Fake::new([
            Err(ProviderError::Timeout {
                provider: "work_api",
            }),
            found_person(),
        ]);
        let setup = resolver(&store, &diretrix, &work_api, TTLS);

        let error = setup.resolver.contact(&key()).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert_eq!(store.find_contact(&key()).await.unwrap(), None);
        assert_eq!(setup.resolver.peek_contact(&key()).await, None);
        let (answer, tier) = setup.resolver.contact(&key()).await.unwrap();
        assert_eq!((answer, tier), (Lookup::Found(cpf()), Tier::Provider));

        let error = setup.resolver.person(&cpf()).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert_eq!(store.party_counts().await.unwrap().enrichments, 0);
        let (answer, tier) = setup.resolver.person(&cpf()).await.unwrap();
        assert!(matches!(answer, Lookup::Found(_)));
        assert_eq!(tier, Tier::Provider);

        assert_eq!((diretrix.calls(), work_api.calls()), (2, 2));
        assert_eq!(store.party_counts().await.unwrap().enrichments, 1);
    }
);

both_backends!(
    person_data_is_bought_once_kept_until_its_maximum_age_and_then_bought_again,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let work_api = Fake::new([found_person()]);
        let first = resolver(&store, &no_contacts(), &work_api, TTLS);

        let (answer, tier) = first.resolver.person(&cpf()).await.unwrap();
        let Lookup::Found(person) = answer else {
            panic!("the Work API knows this CPF");
        };
        assert_eq!(tier, Tier::Provider);
        assert_eq!(person.cpf.as_str(), CPF);
        assert_eq!(store.party_counts().await.unwrap().enrichments, 1);
        let (_, tier) = first.resolver.person(&cpf()).await.unwrap();
        assert_eq!(tier, Tier::Memory);

        let second = resolver(&store, &no_contacts(), &no_people(), TTLS);
        let (answer, tier) = second.resolver.person(&cpf()).await.unwrap();
        assert!(matches!(answer, Lookup::Found(_)));
        assert_eq!(tier, Tier::Database);

        // Every stored answer is older than a zero maximum age: bought again.
        let stale = Ttls {
            max_age: Duration::ZERO,
            ..TTLS
        };
        let again = Fake::new([found_person()]);
        let third = resolver(&store, &no_contacts(), &again, stale);
        let (_, tier) = third.resolver.person(&cpf()).await.unwrap();
        assert_eq!(tier, Tier::Provider);
        assert_eq!((work_api.calls(), again.calls()), (1, 1));
        assert_eq!(store.party_counts().await.unwrap().enrichments, 2);
    }
);

const CALLERS: usize = 16;

both_backends!(
    concurrent_callers_for_one_new_contact_and_cpf_share_one_purchase_each,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (contact_waiting, contact_gate) = watch::channel(0);
        let (person_waiting, person_gate) = watch::channel(0);
        // Each fake answers only once every caller has started and is waiting for an
        // answer: the calls overlap by construction, not by timing.
        let diretrix = Fake::gated(
            [found_contact()],
            Gate {
                waiting: contact_gate,
                callers: CALLERS,
            },
        );
        let work_api = Fake::gated(
            [found_person()],
            Gate {
                waiting: person_gate,
                callers: CALLERS,
            },
        );
        let setup = resolver(&store, &diretrix, &work_api, TTLS);
        let resolver = &setup.resolver;

        let key = key();
        let contacts = futures::future::join_all(
            (0..CALLERS).map(|_| waiting(resolver.contact(&key), &contact_waiting)),
        )
        .await;
        let cpf = cpf();
        let people = futures::future::join_all(
            (0..CALLERS).map(|_| waiting(resolver.person(&cpf), &person_waiting)),
        )
        .await;

        assert_eq!((diretrix.calls(), work_api.calls()), (1, 1));
        for (kind, tiers) in [
            (
                LookupKind::Contact,
                contacts
                    .into_iter()
                    .map(|r| {
                        let (answer, tier) = r.unwrap();
                        assert_eq!(answer, Lookup::Found(cpf.clone()));
                        tier
                    })
                    .collect::<Vec<_>>(),
            ),
            (
                LookupKind::Cpf,
                people
                    .into_iter()
                    .map(|r| {
                        let (answer, tier) = r.unwrap();
                        assert!(matches!(answer, Lookup::Found(_)));
                        tier
                    })
                    .collect(),
            ),
        ] {
            let paid = tiers.iter().filter(|t| **t == Tier::Provider).count();
            let waited = tiers.iter().filter(|t| **t == Tier::Memory).count();
            assert_eq!((paid, waited), (1, CALLERS - 1), "{kind:?}");
            let counts = setup.metrics.tier_counts(kind);
            assert_eq!(
                (counts.provider_call, counts.memory_hit),
                (1, CALLERS as u64 - 1),
                "{kind:?}"
            );
        }
        let counts = store.party_counts().await.unwrap();
        assert_eq!((counts.parties, counts.enrichments), (1, 1));
    }
);

//! Several instances on one Postgres database behave as one: each key bought once, a crashed
//! instance's events taken over within a lease, invalidations reaching every memory, and
//! SQLite refusing a second process.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use enricher::domain::Cpf;
use enricher::metrics::LookupKind;
use enricher::startup::Application;
use enricher::store::EventRecord;
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;
use crate::pipeline::{CPF, PHONE_NATIONAL, mock_c2s_ok, mock_phone_person};

/// A synthetic mobile number and a valid CPF for person `i`.
fn person(i: usize) -> (String, Cpf) {
    let phone = format!("1198765{i:04}");
    let digits = format!("{:09}", 300_000_000 + i * 7919);
    let mut base = [0u8; 9];
    for (b, c) in base.iter_mut().zip(digits.bytes()) {
        *b = c - b'0';
    }
    (phone, Cpf::from_base(base))
}

/// Diretrix and the Work API know person `i`, answering after `delay`, paid `times` times.
async fn mock_person(app: &TestApp, i: usize, delay: Duration, times: impl Into<wiremock::Times>) {
    let (phone, cpf) = person(i);
    let times = times.into();
    Mock::given(method("GET"))
        .and(path(format!("/Consultas/Pessoa/Telefone/{phone}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"nome": format!("PESSOA {i}"), "cpf": cpf.as_str()}]))
                .set_delay(delay),
        )
        .expect(times.clone())
        .mount(&app.diretrix)
        .await;
    Mock::given(method("GET"))
        .and(path("/api"))
        .and(query_param("consulta", cpf.as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({
                    "status": 200,
                    "DadosBasicos": {"nome": format!("PESSOA {i}"), "cpf": cpf.as_str()}
                }))
                .set_delay(delay),
        )
        .expect(times)
        .mount(&app.work_api)
        .await;
}

fn lead_id(person: usize, copy: usize) -> String {
    format!(
        "{:024x}",
        0xa000_0000_0000_u64 + (person as u64) * 1000 + copy as u64
    )
}

/// Posts, for each of `people` new people, `copies` leads carrying the same phone, each lead
/// to every instance at once (the same delivery arriving everywhere). Returns the lead ids.
async fn burst(apps: &[TestApp], people: usize, copies: usize) -> Vec<String> {
    let mut posts = Vec::new();
    let mut leads = Vec::new();
    for i in 0..people {
        let (phone, _) = person(i);
        for copy in 0..copies {
            let lead = lead_id(i, copy);
            let event = c2s_event(
                &lead,
                "on_create_lead",
                "2026-11-20T17:03:11Z",
                Some(&phone),
                None,
            );
            for app in apps {
                let event = event.clone();
                posts.push(async move {
                    let response = app.post_c2s(&event).await;
                    assert_eq!(response.status(), 202);
                });
            }
            leads.push(lead);
        }
    }
    futures::future::join_all(posts).await;
    leads
}

/// Waits until every event in the database is done or dead; returns them.
async fn wait_all_final(app: &TestApp, expected: usize, deadline: Duration) -> Vec<EventRecord> {
    let store = app.store().clone();
    wait_for("every event to finish", deadline, || {
        let store = store.clone();
        async move {
            let events = store.events(None, 10_000).await.ok()?;
            let done = events.len() == expected
                && events
                    .iter()
                    .all(|e| matches!(e.state.as_str(), "done" | "dead"));
            done.then_some(events)
        }
    })
    .await
}

/// How many messages each lead received.
async fn messages_per_lead(app: &TestApp) -> HashMap<String, usize> {
    let mut per_lead = HashMap::new();
    for (lead, _) in app.c2s_messages().await {
        *per_lead.entry(lead).or_insert(0) += 1;
    }
    per_lead
}

async fn each_key_is_bought_once_across(instances: usize) {
    let (people, copies) = (4, 3);
    let apps = spawn_instances(instances, |_| {}).await;
    for i in 0..people {
        mock_person(&apps[0], i, Duration::from_millis(300), 1).await;
    }
    mock_c2s_ok(&apps[0].c2s, (people * copies) as u64).await;

    let leads = burst(&apps, people, copies).await;
    let events = wait_all_final(&apps[0], leads.len(), Duration::from_secs(30)).await;

    assert!(
        events.iter().all(|e| e.state.as_str() == "done"),
        "{events:?}"
    );
    let per_lead = messages_per_lead(&apps[0]).await;
    for lead in &leads {
        assert_eq!(per_lead.get(lead), Some(&1), "messages for lead {lead}");
    }
    apps[0].verify_mocks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_buy_each_contact_and_cpf_once_and_post_one_message_per_lead() {
    each_key_is_bought_once_across(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_instances_buy_each_contact_and_cpf_once_and_post_one_message_per_lead() {
    each_key_is_bought_once_across(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instances_events_are_finished_by_the_others_within_a_lease() {
    let lease = Duration::from_secs(2);
    let people = 6;
    let mut apps = spawn_instances(1, |s| s.workers.lease_secs = lease.as_secs()).await;
    // A purchase in flight at the crash is paid again after the takeover: the one window a
    // `kill -9` leaves open. Everything else is paid once.
    for i in 0..people {
        mock_person(&apps[0], i, Duration::from_millis(600), 1..=2).await;
    }
    let leads = burst(&apps[..1], people, 1).await;
    // Mid-burst: the first purchases are under way, none answered yet.
    wait_for(
        "the crashing instance to be mid-purchase",
        Duration::from_secs(10),
        || async {
            let n = apps[0].diretrix.received_requests().await?.len();
            (n > 0).then_some(())
        },
    )
    .await;
    apps[0].crash().await;
    let crashed_at = Instant::now();
    let survivors = [apps[0].sibling().await, apps[0].sibling().await];
    mock_c2s_ok(&survivors[0].c2s, people as u64).await;

    let events = wait_all_final(&survivors[0], leads.len(), Duration::from_secs(20)).await;
    let took = crashed_at.elapsed();
    println!("takeover: every event final {took:?} after the crash, lease {lease:?}");
    assert!(
        // The lease, then two 600 ms purchases and a POST, and room for a busy machine.
        took < lease + Duration::from_secs(5),
        "takeover took {took:?} with a {lease:?} lease"
    );
    assert!(
        events.iter().all(|e| e.state.as_str() == "done"),
        "{events:?}"
    );
    let per_lead = messages_per_lead(&survivors[0]).await;
    for lead in &leads {
        assert_eq!(per_lead.get(lead), Some(&1), "messages for lead {lead}");
    }
    survivors[0].verify_mocks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_shorter_than_a_provider_call_is_kept_by_the_heartbeat() {
    // Without renewal the second instance would take the event over after one second and
    // work it too (the purchase lock would still save the money: it would wait and read the
    // first instance's answer). The heartbeat keeps the event with the instance working it.
    let apps = spawn_instances(2, |s| s.workers.lease_secs = 1).await;
    mock_person(&apps[0], 0, Duration::from_millis(2500), 1).await;
    mock_c2s_ok(&apps[0].c2s, 1).await;
    let leads = burst(&apps[..1], 1, 1).await;
    let events = wait_all_final(&apps[1], leads.len(), Duration::from_secs(20)).await;
    assert!(
        events.iter().all(|e| e.state.as_str() == "done"),
        "{events:?}"
    );
    assert_eq!(events[0].attempts, 0, "{events:?}");
    let workers_that_looked_up: usize = apps
        .iter()
        .map(|app| {
            let counts = app.state.metrics.tier_counts(LookupKind::Contact);
            counts.memory_hit + counts.database_hit + counts.negative_hit + counts.provider_call
        })
        .filter(|&n| n > 0)
        .count();
    assert_eq!(workers_that_looked_up, 1, "the event ran on two instances");
    apps[0].verify_mocks().await;
}

fn with_admin(s: &mut enricher::config::Settings) {
    s.admin.token = Some(ADMIN_TOKEN.to_owned().into());
}

async fn lookup(app: &TestApp, query: &str) -> Value {
    let response = app
        .admin(Method::GET, &format!("/cache/lookup?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Two instances that both hold Maria (phone and CPF) in memory.
async fn two_instances_remembering_maria() -> Vec<TestApp> {
    let apps = spawn_instances(2, with_admin).await;
    mock_phone_person(&apps[0], 1).await;
    mock_c2s_ok(&apps[0].c2s, 1).await;
    let ids = apps[0]
        .post_c2s_ok(&c2s_event(
            "b1b2c3d4e5f60718293a4b5c",
            "on_create_lead",
            "2026-11-20T17:03:11Z",
            Some(PHONE_NATIONAL),
            None,
        ))
        .await;
    assert_eq!(apps[0].wait_final(ids[0]).await.state.as_str(), "done");
    for app in &apps {
        let warmed = app
            .admin(Method::POST, "/cache/warm?limit=10")
            .send()
            .await
            .unwrap();
        assert_eq!(warmed.status(), 200);
        assert_eq!(
            lookup(app, &format!("phone={PHONE_NATIONAL}")).await["tier"],
            "memory"
        );
        assert_eq!(lookup(app, &format!("cpf={CPF}")).await["tier"], "memory");
    }
    apps
}

/// Waits (at most a second) until `app` answers `query` from `tier`.
async fn wait_tier(app: &TestApp, query: &str, tier: &str) {
    wait_for(
        &format!("{query} to be answered from {tier}"),
        Duration::from_secs(1),
        || async { (lookup(app, query).await["tier"] == tier).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_on_one_instance_empties_the_others_memory_within_a_second() {
    let apps = two_instances_remembering_maria().await;
    let erased = apps[0]
        .admin(Method::DELETE, &format!("/api/v1/parties/{CPF}"))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    wait_tier(&apps[1], &format!("phone={PHONE_NATIONAL}"), "none").await;
    wait_tier(&apps[1], &format!("cpf={CPF}"), "none").await;
    apps[0].verify_mocks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_drop_on_one_instance_reaches_the_others_within_a_second() {
    let apps = two_instances_remembering_maria().await;
    let dropped = apps[0]
        .admin(
            Method::DELETE,
            &format!("/cache/entries?phone={PHONE_NATIONAL}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status(), 200);
    wait_tier(&apps[1], &format!("phone={PHONE_NATIONAL}"), "database").await;
    // The CPF was not named: it stays.
    assert_eq!(
        lookup(&apps[1], &format!("cpf={CPF}")).await["tier"],
        "memory"
    );

    let dropped = apps[0]
        .admin(Method::DELETE, "/cache")
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status(), 200);
    wait_tier(&apps[1], &format!("cpf={CPF}"), "database").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_on_one_instance_replaces_the_others_memory_within_a_second() {
    let apps = two_instances_remembering_maria().await;
    // The refresh buys again: the Work API now knows a new name.
    let mut renamed = fixture("work_api_person.json");
    renamed["DadosBasicos"]["nome"] = json!("MARIA SOUZA RENOMEADA");
    Mock::given(method("GET"))
        .and(path("/api"))
        .and(query_param("consulta", CPF))
        .respond_with(ResponseTemplate::new(200).set_body_json(renamed))
        .with_priority(1)
        .expect(1)
        .mount(&apps[0].work_api)
        .await;
    // Ahead of the mocks that answered the first purchase, which expect no more calls.
    Mock::given(method("GET"))
        .and(path(format!("/Consultas/Pessoa/Telefone/{PHONE_NATIONAL}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("diretrix_found.json")))
        .with_priority(1)
        .expect(1)
        .mount(&apps[0].diretrix)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .with_priority(1)
        .expect(1)
        .mount(&apps[0].c2s)
        .await;
    let refreshed = apps[0]
        .admin(
            Method::POST,
            "/api/v1/leads/b1b2c3d4e5f60718293a4b5c/refresh",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 202);
    let body: Value = refreshed.json().await.unwrap();
    let id = body["event_id"].as_i64().unwrap();
    assert_eq!(apps[0].wait_final(id).await.state.as_str(), "done");
    // Whichever instance worked the refresh holds the new person; the other dropped the old.
    for app in &apps {
        wait_for(
            "the new name everywhere",
            Duration::from_secs(1),
            || async {
                let seen = lookup(app, &format!("cpf={CPF}&reveal=true")).await;
                (seen["person"]["name"] == "MARIA SOUZA RENOMEADA").then_some(())
            },
        )
        .await;
    }
    apps[0].verify_mocks().await;
}

async fn ready(app: &TestApp) -> Value {
    app.http
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn reconnects(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("enricher_invalidation_reconnects_total"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_connection_comes_back_by_itself_with_memory_emptied() {
    let apps = two_instances_remembering_maria().await;
    let app = &apps[1];
    assert_eq!(ready(app).await["invalidations"], "listening");
    assert_eq!(reconnects(&app.scrape().await), Some(0.0));

    let mut admin = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&app.db.url).await.unwrap()
    };
    // Both instances listen on this database: both lose their listener.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'enricher-listener'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, vec![true, true]);

    for app in &apps {
        wait_for(
            "the listener to be back",
            Duration::from_secs(10),
            || async {
                let listening = ready(app).await["invalidations"] == "listening";
                (listening && reconnects(&app.scrape().await) == Some(1.0)).then_some(())
            },
        )
        .await;
        // Memory was dropped: invalidations may have been missed meanwhile.
        assert_eq!(
            lookup(app, &format!("phone={PHONE_NATIONAL}")).await["tier"],
            "database"
        );
        assert_eq!(lookup(app, &format!("cpf={CPF}")).await["tier"], "database");
    }
    // And invalidations flow again.
    app.admin(Method::POST, "/cache/warm?limit=10")
        .send()
        .await
        .unwrap();
    assert_eq!(lookup(app, &format!("cpf={CPF}")).await["tier"], "memory");
    apps[0]
        .admin(Method::DELETE, "/cache")
        .send()
        .await
        .unwrap();
    wait_tier(app, &format!("cpf={CPF}"), "database").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_refused_and_the_first_keeps_working() {
    let app = spawn_app(Backend::Sqlite).await;
    let settings = test_settings(&app.db, &app.diretrix, &app.work_api, &app.c2s);
    let refused = Application::build(settings).await;
    let error = match refused {
        Ok(_) => panic!("a second instance started on the same SQLite file"),
        Err(e) => e.to_string(),
    };
    let file = app.db.url.trim_start_matches("sqlite://");
    assert!(error.contains(file), "{error}");
    assert!(
        error.contains(&format!("pid {}", std::process::id())),
        "{error}"
    );

    // The first instance is untouched: it takes and works a lead.
    mock_phone_person(&app, 1).await;
    mock_c2s_ok(&app.c2s, 1).await;
    let ids = app
        .post_c2s_ok(&c2s_event(
            "c1b2c3d4e5f60718293a4b5c",
            "on_create_lead",
            "2026-11-20T17:03:11Z",
            Some(PHONE_NATIONAL),
            None,
        ))
        .await;
    assert_eq!(app.wait_final(ids[0]).await.state.as_str(), "done");
    app.verify_mocks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_keeps_answering_while_more_purchases_wait_than_the_pools_hold() {
    // Three connections for intake and claims, two for purchase locks, sixteen workers per
    // instance: twelve people, each arriving on both instances as two leads, so at any time
    // more purchases wait for locks than the pools hold.
    let apps = spawn_instances(2, |s| {
        s.database.max_connections = 3;
        s.database.lock_connections = 2;
    })
    .await;
    let people = 12;
    for i in 0..people {
        mock_person(&apps[0], i, Duration::from_millis(400), 1).await;
    }
    mock_c2s_ok(&apps[0].c2s, (people * 2) as u64).await;
    let started = Instant::now();
    let leads = burst(&apps, people, 2).await;

    // Meanwhile, new webhooks keep arriving at both instances.
    let mut latencies = Vec::new();
    for n in 0..20 {
        let app = &apps[n % 2];
        let event = c2s_event(
            &format!("{:024x}", 0xbeef_0000_u64 + n as u64),
            "on_close_lead",
            "2026-11-20T17:03:11Z",
            Some(PHONE_NATIONAL),
            None,
        );
        let sent = Instant::now();
        let response = app.post_c2s(&event).await;
        latencies.push(sent.elapsed());
        assert_eq!(response.status(), 202);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = wait_all_final(&apps[0], leads.len() + 20, Duration::from_secs(60)).await;
    assert!(
        events.iter().all(|e| e.state.as_str() == "done"),
        "{events:?}"
    );
    latencies.sort();
    let worst = *latencies.last().unwrap();
    println!(
        "intake under lock pressure: median {:?}, worst {worst:?}; burst finished in {:?}",
        latencies[latencies.len() / 2],
        started.elapsed()
    );
    assert!(
        worst < Duration::from_millis(1500),
        "worst intake {worst:?}"
    );
    let per_lead = messages_per_lead(&apps[0]).await;
    let leads: HashSet<&String> = leads.iter().collect();
    assert!(leads.iter().all(|l| per_lead.get(*l) == Some(&1)));
    // Closed leads post nothing: the C2S mock saw only the burst's messages.
    assert_eq!(per_lead.values().sum::<usize>(), people * 2);
    apps[0].verify_mocks().await;
}

/// A connection to the test's database, outside every application.
async fn outside_connection(app: &TestApp) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&app.db.url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_lock_held_too_long_elsewhere_retries_the_event_and_buys_once() {
    let apps = spawn_instances(1, |s| {
        s.database.lock_wait_ms = 300;
        s.delivery.base_delay_ms = 200;
    })
    .await;
    let app = &apps[0];
    // Another instance is buying this phone (its lock held by an outside transaction).
    let mut other = outside_connection(app).await;
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(x'456e4331'::int, hashtext($1))")
        .bind("phone:+5511987650000")
        .execute(&mut other)
        .await
        .unwrap();
    mock_person(app, 0, Duration::ZERO, 1).await;
    mock_c2s_ok(&app.c2s, 1).await;
    let leads = burst(&apps, 1, 1).await;

    let store = app.store().clone();
    let retried = wait_for("the event to be retried", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let event = store.events(None, 10).await.ok()?.pop()?;
            (event.attempts > 0).then_some(event)
        }
    })
    .await;
    assert!(
        retried.last_error.as_deref().unwrap_or("").contains("busy"),
        "{retried:?}"
    );
    assert_eq!(app.diretrix.received_requests().await.unwrap().len(), 0);

    // The other instance is done: the retry buys, once.
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let events = wait_all_final(app, leads.len(), Duration::from_secs(20)).await;
    assert_eq!(events[0].state.as_str(), "done", "{events:?}");
    app.verify_mocks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_on_postgres_wait_for_one_another() {
    // Two claims judging one lead on different snapshots could both take an event of it;
    // claims therefore run one at a time, under one advisory lock.
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let event = enricher::store::NewEvent::new(
        enricher::event::LeadEvent::new(
            enricher::event::Source::C2s,
            enricher::domain::LeadId::parse("d1b2c3d4e5f60718293a4b5c").unwrap(),
            enricher::event::Action::Create,
            time::OffsetDateTime::now_utc(),
        ),
        json!({}),
    );
    store.insert_events(&[event]).await.unwrap();
    let mut other = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&db.url).await.unwrap()
    };
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(x'456e4333'::int, 0)")
        .execute(&mut other)
        .await
        .unwrap();

    let lease = Duration::from_secs(15);
    let claim = store.claim_events(10, lease);
    tokio::pin!(claim);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut claim).await;
    assert!(
        early.is_err(),
        "a claim ran while another held the claim lock"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(5), claim)
        .await
        .expect("the claim goes on once the other finished")
        .unwrap();
    assert_eq!(claimed.len(), 1);
}

crate::both_backends!(
    a_lease_is_renewed_only_by_the_claim_that_holds_it,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let event = enricher::store::NewEvent::new(
            enricher::event::LeadEvent::new(
                enricher::event::Source::C2s,
                enricher::domain::LeadId::parse("e1b2c3d4e5f60718293a4b5c").unwrap(),
                enricher::event::Action::Create,
                time::OffsetDateTime::now_utc(),
            ),
            json!({}),
        );
        store.insert_events(&[event]).await.unwrap();
        let short = Duration::from_millis(300);
        let mine = store.claim_events(1, short).await.unwrap().pop().unwrap();
        // Renewed past its first expiry, the event stays with its holder...
        assert!(
            store
                .renew_lease(&mine, Duration::from_secs(30))
                .await
                .unwrap()
        );
        tokio::time::sleep(short * 2).await;
        assert!(store.claim_events(1, short).await.unwrap().is_empty());
        // ...while a claim that was taken over renews nothing.
        let mut stale = mine.clone();
        stale.claim = uuid::Uuid::now_v7();
        assert!(
            !store
                .renew_lease(&stale, Duration::from_secs(30))
                .await
                .unwrap()
        );
    }
);

crate::both_backends!(
    a_load_in_flight_across_a_cache_drop_does_not_refill_memory,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        mock_person(&app, 0, Duration::from_millis(800), 1).await;
        mock_c2s_ok(&app.c2s, 1).await;
        let leads = burst(std::slice::from_ref(&app), 1, 1).await;
        wait_for(
            "the purchase to be under way",
            Duration::from_secs(10),
            || async { (!app.diretrix.received_requests().await?.is_empty()).then_some(()) },
        )
        .await;
        let dropped = app.admin(Method::DELETE, "/cache").send().await.unwrap();
        assert_eq!(dropped.status(), 200);
        let events = wait_all_final(&app, leads.len(), Duration::from_secs(20)).await;
        assert_eq!(events[0].state.as_str(), "done");
        let (phone, _) = person(0);
        // Bought and stored, but dropped from memory: the drop came after the load began.
        assert_eq!(
            lookup(&app, &format!("phone={phone}")).await["tier"],
            "database"
        );
        app.verify_mocks().await;
    }
);

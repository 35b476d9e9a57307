//! The operators' surface: metrics after a scripted run, admin auth, cache control, events,
//! erasure, forced refresh, enrichment age, and the OpenAPI document.

use std::time::Duration;

use enricher::domain::Cpf;
use enricher::domain::Person;
use enricher::operators::cache::warm_in_pages;
use enricher::providers::work_api::WorkApiAnswer;
use enricher::store::Lookup;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use wiremock::matchers::{bearer_token, method, path, path_regex, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{
    CPF, PHONE_NATIONAL, mock_c2s_ok, mock_diretrix_phone, mock_phone_person, mock_work,
};

const OTHER_PHONE: &str = "21998765432";

pub fn with_admin(s: &mut enricher::config::Settings) {
    s.admin.token = Some(ADMIN_TOKEN.to_owned().into());
}

fn lead(id: &str, phone: &str) -> Value {
    c2s_event(
        id,
        "on_create_lead",
        "2026-11-20T10:00:00Z",
        Some(phone),
        None,
    )
}

async fn deliver(app: &TestApp, id: &str, phone: &str) {
    let ids = app.post_c2s_ok(&lead(id, phone)).await;
    assert_eq!(
        app.wait_final(ids[0]).await.outcome.map(|o| o.as_str()),
        Some("delivered"),
        "{id}"
    );
}

pub async fn json(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    response.json().await.unwrap()
}

/// The value of one exact series in an exposition, e.g. `name{a="b"}`.
pub fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        without_instance(l)
            .strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

/// A series line without its `instance` label (every series carries one).
pub fn without_instance(line: &str) -> String {
    let Some(start) = line.find("instance=\"") else {
        return line.to_owned();
    };
    let value_end = start + "instance=\"".len() + line[start + 10..].find('"').unwrap() + 1;
    let (mut from, mut to) = (start, value_end);
    if line[..from].ends_with(',') {
        from -= 1;
    } else if line[to..].starts_with(',') {
        to += 1;
    }
    let out = format!("{}{}", &line[..from], &line[to..]);
    out.replace("{}", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_run_exactly() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        with_admin(s);
        s.diretrix.price_per_call = 0.5;
        s.work_api.price_per_call = 2.0;
    })
    .await;
    mock_phone_person(&app, 1).await;
    mock_diretrix_phone(&app.diretrix, OTHER_PHONE, json!([]), 1).await;
    mock_c2s_ok(&app.c2s, 5).await;

    deliver(&app, "miss", PHONE_NATIONAL).await; // both kinds: provider call
    deliver(&app, "memory", "+55 (11) 98765-4321").await; // both kinds: memory hit
    let dropped = json(
        app.admin(Method::DELETE, "/cache").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(dropped["memory"], 2);
    deliver(&app, "database", "011 98765 4321").await; // both kinds: database hit
    deliver(&app, "nobody", OTHER_PHONE).await; // contact: provider call, nobody
    deliver(&app, "negative", OTHER_PHONE).await; // contact: negative hit
    let rejected = app
        .http
        .post(format!("{}/api/v1/webhooks/c2s", app.address))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 415);

    let text = app.scrape().await;
    let expected = [
        (
            r#"enricher_lookups_total{kind="contact",result="provider_call"}"#,
            2.0,
        ),
        (
            r#"enricher_lookups_total{kind="contact",result="memory_hit"}"#,
            1.0,
        ),
        (
            r#"enricher_lookups_total{kind="contact",result="database_hit"}"#,
            1.0,
        ),
        (
            r#"enricher_lookups_total{kind="contact",result="negative_hit"}"#,
            1.0,
        ),
        (
            r#"enricher_lookups_total{kind="cpf",result="provider_call"}"#,
            1.0,
        ),
        (
            r#"enricher_lookups_total{kind="cpf",result="memory_hit"}"#,
            1.0,
        ),
        (
            r#"enricher_lookups_total{kind="cpf",result="database_hit"}"#,
            1.0,
        ),
        (
            r#"enricher_provider_calls_total{provider="diretrix",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"enricher_provider_calls_total{provider="work_api",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"enricher_provider_latency_seconds_count{provider="diretrix"}"#,
            2.0,
        ),
        (r#"enricher_provider_spend_total{provider="diretrix"}"#, 1.0),
        (r#"enricher_provider_spend_total{provider="work_api"}"#, 2.0),
        (r#"enricher_provider_saved_total{provider="diretrix"}"#, 1.5),
        (r#"enricher_provider_saved_total{provider="work_api"}"#, 4.0),
        (
            r#"enricher_webhooks_total{source="c2s",outcome="accepted",reason="none"}"#,
            5.0,
        ),
        (
            r#"enricher_webhooks_total{source="c2s",outcome="rejected",reason="unsupported_media_type"}"#,
            1.0,
        ),
        (r#"enricher_deliveries_total{outcome="ok"}"#, 5.0),
        (
            r#"enricher_events_total{state="done",outcome="delivered"}"#,
            5.0,
        ),
        (r#"enricher_inbox_events{state="done"}"#, 5.0),
        (r#"enricher_inbox_events{state="dead"}"#, 0.0),
        ("enricher_negative_entries", 1.0),
        (r#"enricher_build_info{version="0.1.0"}"#, 1.0),
        // Every event went through every step once, and was delivered at its first attempt.
        (r#"enricher_event_stage_seconds_count{stage="queued"}"#, 5.0),
        (
            r#"enricher_event_stage_seconds_count{stage="resolve"}"#,
            5.0,
        ),
        (r#"enricher_event_stage_seconds_count{stage="save"}"#, 5.0),
        (r#"enricher_event_stage_seconds_count{stage="post"}"#, 5.0),
        ("enricher_delivery_latency_seconds_count", 5.0),
    ];
    for (name, value) in expected {
        assert_eq!(series(&text, name), Some(value), "{name} in:\n{text}");
    }
    // A finish is timed once its write returned, which is when the event already reads as
    // done, so the last one may land just after the scrape.
    wait_for("five timed finishes", Duration::from_secs(5), || async {
        let text = app.scrape().await;
        (series(
            &text,
            r#"enricher_event_stage_seconds_count{stage="finish"}"#,
        ) == Some(5.0))
        .then_some(())
    })
    .await;
    // The steps add up to no more than the whole way, and its buckets are the fine ones.
    let total = series(&text, "enricher_delivery_latency_seconds_sum").unwrap();
    let steps: f64 = ["resolve", "save", "post"]
        .iter()
        .map(|s| {
            series(
                &text,
                &format!(r#"enricher_event_stage_seconds_sum{{stage="{s}"}}"#),
            )
            .unwrap()
        })
        .sum();
    assert!(steps > 0.0 && steps <= total, "{steps} of {total}");
    assert!(
        series(
            &text,
            r#"enricher_delivery_latency_seconds_bucket{le="0.0005"}"#
        )
        .is_some(),
        "{text}"
    );
    // Maria's phone and CPF (reloaded from the database after the drop), the other phone's nobody.
    assert_eq!(series(&text, "enricher_cache_entries"), Some(3.0));
    assert!(series(&text, "enricher_cache_weighted_bytes").unwrap() > 0.0);
    assert!(series(&text, "enricher_uptime_seconds").unwrap() > 0.0);

    let stats = json(
        app.admin(Method::GET, "/cache/stats").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(stats["contact"]["provider_call"], 2);
    assert_eq!(stats["contact"]["negative_hit"], 1);
    assert_eq!(stats["cpf"]["hit_ratio"], json!(2.0 / 3.0));
    assert_eq!(stats["hit_ratio"], json!(5.0 / 8.0));
    assert_eq!(stats["negative_entries"], 1);
    assert_eq!(stats["ttl_secs"], 86_400);
    app.diretrix.verify().await;
    app.work_api.verify().await;
}

#[tokio::test]
async fn admin_routes_are_absent_without_a_token_and_closed_without_the_right_one() {
    let closed = spawn_app(Backend::Sqlite).await;
    let response = closed
        .admin(Method::GET, "/cache/stats")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "no admin token configured: disabled, never open"
    );

    let app = spawn_app_with(Backend::Sqlite, with_admin).await;
    // Something for every route to act on: a delivered lead, a person in memory and in the
    // database, a remembered nobody.
    mock_phone_person(&app, 1).await;
    mock_diretrix_phone(&app.diretrix, OTHER_PHONE, json!([]), 1).await;
    mock_c2s_ok(&app.c2s, 2).await;
    deliver(&app, "L-1", PHONE_NATIONAL).await;
    deliver(&app, "L-2", OTHER_PHONE).await;
    let before = observable(&app).await;

    let url = format!("{}/cache/stats", app.address);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    for (method, path) in [
        (Method::DELETE, "/cache"),
        (
            Method::DELETE,
            "/cache/entries?phone=11987654321&negative=true",
        ),
        (Method::POST, "/cache/warm"),
        (Method::GET, "/cache/lookup?phone=11987654321"),
        (Method::GET, "/api/v1/events"),
        (Method::POST, "/api/v1/events/replay?state=dead"),
        (Method::POST, "/api/v1/events/1/replay"),
        (Method::DELETE, &*format!("/api/v1/parties/{CPF}")),
        (Method::POST, "/api/v1/leads/L-1/refresh"),
    ] {
        for token in [None, Some("not-the-token")] {
            let mut request = app
                .http
                .request(method.clone(), format!("{}{path}", app.address));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
        }
    }
    // Nothing moved: not the store, not memory, not a counter, and no provider was called
    // (the mocks' expectations are checked when the app is dropped).
    assert_eq!(observable(&app).await, before);
    assert_eq!(
        app.admin(Method::GET, "/cache/stats")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Everything an admin route could change: stored rows, events, memory and the counters.
async fn observable(app: &TestApp) -> (String, String, String, String) {
    let counts = app.store().party_counts().await.unwrap();
    let events = serde_json::to_string(&app.store().events(None, 100).await.unwrap()).unwrap();
    let memory = format!(
        "{:?} {:?} {:?}",
        app.state.resolver.cache_usage().await,
        app.state.resolver.peek_contact(&phone_key()).await,
        app.state
            .resolver
            .peek_person(&enricher::domain::Cpf::parse(CPF).unwrap())
            .await
    );
    // The exposition's order is not stable from one scrape to the next.
    let mut counters: Vec<String> = app
        .scrape()
        .await
        .lines()
        .filter(|l| {
            [
                "enricher_lookups_total",
                "enricher_provider_",
                "enricher_events_total",
                "enricher_deliveries_total",
                "enricher_negative_entries",
                "enricher_cache_",
                "enricher_inbox_events",
            ]
            .iter()
            .any(|prefix| l.starts_with(prefix))
        })
        .map(str::to_owned)
        .collect();
    assert!(!counters.is_empty());
    counters.sort();
    (format!("{counts:?}"), events, memory, counters.join("\n"))
}

fn phone_key() -> enricher::domain::ContactKey {
    enricher::domain::ContactKey::Phone(enricher::domain::Phone::parse(PHONE_NATIONAL).unwrap())
}

both_backends!(
    cache_lookup_tells_the_tier_without_calling_a_provider_and_entries_can_be_dropped,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        mock_phone_person(&app, 1).await;
        mock_diretrix_phone(&app.diretrix, OTHER_PHONE, json!([]), 2).await;
        mock_c2s_ok(&app.c2s, 3).await;
        deliver(&app, "L-1", PHONE_NATIONAL).await;
        deliver(&app, "L-2", OTHER_PHONE).await;

        let view = json(
            app.admin(Method::GET, "/cache/lookup?phone=(11)%2098765-4321")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(
            (view["tier"].as_str(), view["found"].as_bool()),
            (Some("memory"), Some(true))
        );
        assert_eq!(view["cpf"], "***.***.*59-06");
        let revealed = json(
            app.admin(Method::GET, "/cache/lookup?phone=11987654321&reveal=true")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(revealed["cpf"], CPF);
        let person = json(
            app.admin(Method::GET, &format!("/cache/lookup?cpf={CPF}"))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(person["tier"], "memory");
        assert_eq!(person["person"]["name"], "M*** A*** S***");
        assert!(
            !person.to_string().contains("MARIA"),
            "masked unless revealed: {person}"
        );

        let dropped = json(
            app.admin(Method::DELETE, "/cache/entries?phone=11987654321")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(dropped["memory"], 1);
        let view = json(
            app.admin(Method::GET, "/cache/lookup?phone=11987654321")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["tier"], "database");
        let unknown = json(
            app.admin(Method::GET, "/cache/lookup?email=nobody.here@example.com")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(
            (unknown["tier"].as_str(), unknown["found"].as_bool()),
            (Some("none"), None)
        );

        // A remembered "nobody" dropped with negative=true is bought again.
        let dropped = json(
            app.admin(
                Method::DELETE,
                &format!("/cache/entries?phone={OTHER_PHONE}&negative=true"),
            )
            .send()
            .await
            .unwrap(),
            200,
        )
        .await;
        assert_eq!(
            (dropped["memory"].as_u64(), dropped["negatives"].as_u64()),
            (Some(1), Some(1))
        );
        deliver(&app, "L-3", OTHER_PHONE).await;

        for bad in [
            "/cache/lookup",
            "/cache/lookup?phone=1&email=a@b.com",
            "/cache/lookup?phone=abc",
            "/cache/lookup?cpf=123",
        ] {
            let response = app.admin(Method::GET, bad).send().await.unwrap();
            assert_eq!(response.status(), 422, "{bad}");
        }
        app.diretrix.verify().await;
        app.work_api.verify().await;
    }
);

both_backends!(
    warming_loads_recent_people_into_memory_on_demand_and_at_start,
    |backend| async move {
        let app = spawn_app_with(backend, |s| {
            with_admin(s);
            s.cache.warm_on_start = 10;
        })
        .await;
        mock_phone_person(&app, 1).await;
        mock_c2s_ok(&app.c2s, 1).await;
        deliver(&app, "L-1", PHONE_NATIONAL).await;

        let app = app.restart().await;
        let view = json(
            app.admin(Method::GET, "/cache/lookup?phone=11987654321")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["tier"], "memory", "warmed at start");
        json(
            app.admin(Method::DELETE, "/cache").send().await.unwrap(),
            200,
        )
        .await;
        let view = json(
            app.admin(Method::GET, &format!("/cache/lookup?cpf={CPF}"))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["tier"], "database");
        let warmed = json(
            app.admin(Method::POST, "/cache/warm?limit=5")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(warmed["loaded"], 1);
        let view = json(
            app.admin(Method::GET, &format!("/cache/lookup?cpf={CPF}"))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["tier"], "memory");
    }
);

/// The fixture's raw Work API answer and the person read from it.
fn fixture_person() -> (Value, Person) {
    let raw = fixture("work_api_person.json");
    match WorkApiAnswer::parse(&raw).unwrap() {
        WorkApiAnswer::Found(person) => (raw, person),
        WorkApiAnswer::NotFound => panic!("the fixture is a found person"),
    }
}

both_backends!(
    warming_reads_page_by_page_and_loads_every_person_up_to_the_limit,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        let store = app.store().clone();
        let (raw, person) = fixture_person();
        let cpfs: Vec<Cpf> = (1..=7)
            .map(|i| Cpf::from_base([2, 7, 1, 8, 2, 8, 1, 8, i]))
            .collect();
        for cpf in &cpfs {
            let mut person = person.clone();
            person.cpf = cpf.clone();
            store
                .record_person(
                    cpf,
                    &Lookup::Found((raw.clone(), person)),
                    enricher::store::Provider::WorkApi,
                    OffsetDateTime::now_utc() + time::Duration::days(1),
                )
                .await
                .unwrap();
        }

        // Pages of two: the limit cuts inside the third page.
        let loaded = warm_in_pages(&app.state, 5, 2).await.unwrap();
        assert_eq!(loaded, 5);
        let held = |cpf: Cpf| {
            let resolver = app.state.resolver.clone();
            async move { resolver.peek_person(&cpf).await.is_some() }
        };
        assert!(held(cpfs[6].clone()).await, "the newest is warmed");
        assert!(!held(cpfs[0].clone()).await, "the oldest is past the limit");

        // A limit past the end stops at the last, short page.
        app.state.resolver.forget_all().await;
        let loaded = warm_in_pages(&app.state, 100, 2).await.unwrap();
        assert_eq!(loaded, 7);
        for cpf in cpfs {
            assert!(held(cpf).await);
        }
    }
);

both_backends!(
    dead_events_are_listed_with_reasons_and_replayed_without_paying_again,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        // Two leads whose messages differ (a person found, nobody found), so a replay that
        // posted the wrong text, or one rendered anew, would show.
        mock_phone_person(&app, 1).await;
        mock_diretrix_phone(&app.diretrix, OTHER_PHONE, json!([]), 1).await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/integration/leads/[^/]+/create_message$"))
            .and(bearer_token(C2S_TOKEN))
            .respond_with(ResponseTemplate::new(422))
            .up_to_n_times(2)
            .with_priority(1)
            .expect(2)
            .mount(&app.c2s)
            .await;
        mock_c2s_ok(&app.c2s, 2).await;
        let first = app.post_c2s_ok(&lead("L-1", PHONE_NATIONAL)).await[0];
        let second = app.post_c2s_ok(&lead("L-2", OTHER_PHONE)).await[0];
        for id in [first, second] {
            assert_eq!(app.wait_final(id).await.state.as_str(), "dead");
        }

        let list = json(
            app.admin(Method::GET, "/api/v1/events?state=dead")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let events = list["events"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert!(events[0]["reason"].as_str().unwrap().contains("422"));
        assert_eq!(events[0]["attempts"], 1);

        let replayed = json(
            app.admin(Method::POST, &format!("/api/v1/events/{first}/replay"))
                .send()
                .await
                .unwrap(),
            202,
        )
        .await;
        assert_eq!(replayed["replayed"], 1);
        assert_eq!(
            app.wait_final(first).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let again = app
            .admin(Method::POST, &format!("/api/v1/events/{first}/replay"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            again.status(),
            409,
            "a delivered event is never posted twice"
        );
        assert_eq!(
            app.admin(Method::POST, "/api/v1/events/999999/replay")
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            app.admin(Method::POST, "/api/v1/events/replay?state=done")
                .send()
                .await
                .unwrap()
                .status(),
            422
        );
        assert_eq!(
            app.admin(Method::GET, "/api/v1/events?state=weird")
                .send()
                .await
                .unwrap()
                .status(),
            422
        );

        let all = json(
            app.admin(Method::POST, "/api/v1/events/replay?state=dead")
                .send()
                .await
                .unwrap(),
            202,
        )
        .await;
        assert_eq!(all["replayed"], 1);
        assert_eq!(
            app.wait_final(second).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        let messages = app.c2s_messages().await;
        assert_eq!(
            messages.len(),
            4,
            "two rejected, two delivered after replay"
        );
        let texts = |lead: &str| -> Vec<String> {
            messages
                .iter()
                .filter(|(l, _)| l == lead)
                .map(|(_, body)| body.clone())
                .collect()
        };
        let (l1, l2) = (texts("L-1"), texts("L-2"));
        assert_eq!((l1.len(), l2.len()), (2, 2), "{messages:?}");
        assert!(l1[0].contains("CPF: 526.018.159-06"), "{}", l1[0]);
        assert!(l2[0].contains("nenhum dado encontrado"), "{}", l2[0]);
        assert_eq!(
            l1[1], l1[0],
            "L-1's replay posts the message rendered for L-1 the first time"
        );
        assert_eq!(
            l2[1], l2[0],
            "L-2's replay posts the message rendered for L-2 the first time"
        );
        app.verify_mocks().await;
    }
);

both_backends!(
    erasing_a_party_removes_its_data_and_cache_and_the_next_lookup_pays_again,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        mock_phone_person(&app, 2).await;
        mock_c2s_ok(&app.c2s, 2).await;
        deliver(&app, "L-1", PHONE_NATIONAL).await;

        let erased = json(
            app.admin(Method::DELETE, "/api/v1/parties/526.018.159-06")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(erased["found"], true);
        assert_eq!(erased["enrichments"], 1);
        assert_eq!(erased["lead_links"], 1);
        assert_eq!(
            erased["memory_entries"], 2,
            "the phone's answer and the person: {erased}"
        );
        let counts = app.store().party_counts().await.unwrap();
        assert_eq!(
            (
                counts.parties,
                counts.contacts,
                counts.enrichments,
                counts.lead_links
            ),
            (0, 0, 0, 0)
        );
        let audit = app.store().erasure_audit(10).await.unwrap();
        assert_eq!(audit.len(), 1);
        let audit_text = serde_json::to_string(&audit).unwrap();
        assert!(audit_text.contains(erased["cpf_hash"].as_str().unwrap()));
        for personal in [CPF, "526.018.159", PHONE_NATIONAL, "MARIA"] {
            assert!(
                !audit_text.contains(personal),
                "audit holds {personal}: {audit_text}"
            );
        }
        let view = json(
            app.admin(Method::GET, "/cache/lookup?phone=11987654321")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["tier"], "none");

        deliver(&app, "L-2", PHONE_NATIONAL).await;
        app.diretrix.verify().await;
        app.work_api.verify().await;
        assert_eq!(
            app.admin(Method::DELETE, "/api/v1/parties/123")
                .send()
                .await
                .unwrap()
                .status(),
            422
        );
    }
);

both_backends!(
    a_forced_refresh_bypasses_every_tier_and_posts_a_fresh_message,
    |backend| async move {
        let app = spawn_app_with(backend, with_admin).await;
        mock_diretrix_phone(
            &app.diretrix,
            PHONE_NATIONAL,
            fixture("diretrix_found.json"),
            2,
        )
        .await;
        // The Work API's second answer differs: the refreshed message must say what it says.
        Mock::given(method("GET"))
            .and(path("/api"))
            .and(query_param("token", WORK_TOKEN))
            .and(query_param("consulta", CPF))
            .respond_with(ResponseTemplate::new(200).set_body_json(fixture("work_api_person.json")))
            .up_to_n_times(1)
            .with_priority(1)
            .expect(1)
            .mount(&app.work_api)
            .await;
        let mut richer = fixture("work_api_person.json");
        richer["DadosEconomicos"]["renda"] = json!("9100,00");
        mock_work(&app.work_api, CPF, richer, 1).await;
        mock_c2s_ok(&app.c2s, 2).await;
        deliver(&app, "L-1", PHONE_NATIONAL).await;

        let queued = json(
            app.admin(Method::POST, "/api/v1/leads/L-1/refresh")
                .send()
                .await
                .unwrap(),
            202,
        )
        .await;
        let id = queued["event_id"].as_i64().unwrap();
        assert_eq!(
            app.wait_final(id).await.outcome.map(|o| o.as_str()),
            Some("delivered")
        );
        assert_eq!(app.store().party_counts().await.unwrap().enrichments, 2);
        let messages = app.c2s_messages().await;
        assert_eq!(messages.len(), 2);
        assert!(messages[0].1.contains("R$ 8.500,50"), "{}", messages[0].1);
        assert_eq!(messages[1].0, "L-1");
        assert!(
            messages[1].1.contains("R$ 9.100,00") && !messages[1].1.contains("8.500,50"),
            "the refresh posts what was bought again:\n{}",
            messages[1].1
        );
        assert_eq!(
            app.admin(Method::POST, "/api/v1/leads/unknown/refresh")
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        app.diretrix.verify().await;
        app.work_api.verify().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_data_older_than_the_maximum_age_is_bought_again_on_its_next_use() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.cache.max_age_days = 0).await;
    mock_diretrix_phone(
        &app.diretrix,
        PHONE_NATIONAL,
        fixture("diretrix_found.json"),
        1,
    )
    .await;
    mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 2).await;
    mock_c2s_ok(&app.c2s, 2).await;
    deliver(&app, "L-1", PHONE_NATIONAL).await;
    let app = app.restart().await;
    deliver(&app, "L-2", PHONE_NATIONAL).await;
    app.diretrix.verify().await;
    app.work_api.verify().await;
}

#[tokio::test]
async fn the_served_openapi_document_matches_the_router_route_for_route() {
    let app = spawn_app_with(Backend::Sqlite, with_admin).await;
    let served = json(
        app.http
            .get(format!("{}/openapi.json", app.address))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        served,
        serde_json::to_value(enricher::http::openapi()).unwrap()
    );

    let paths = served["paths"].as_object().unwrap();
    let expected = [
        "/health",
        "/ready",
        "/sandbox/messages",
        "/api/v1/webhooks/c2s",
        "/cache/stats",
        "/cache/lookup",
        "/cache/entries",
        "/cache",
        "/cache/warm",
        "/api/v1/events",
        "/api/v1/events/{id}/replay",
        "/api/v1/events/replay",
        "/api/v1/parties/{cpf}",
        "/api/v1/leads/{lead_id}/refresh",
    ];
    for path in expected {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    // Every documented operation is routed: the router answers something other than its
    // own "no such route" (404 with an empty body) or "wrong method" (405).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "1")
                .replace("{cpf}", CPF)
                .replace("{lead_id}", "L-1");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app
                .http
                .request(method.clone(), format!("{}{concrete}", app.address))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !(status == 404 && body.is_empty()),
                "{method} {path} is not routed"
            );
        }
    }
}

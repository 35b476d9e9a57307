//! `enricher backfill`: CSV rows through the inbox and the same workers as webhooks, paying
//! once per person, posting once per lead, resumable, priced without calls in a dry run, and
//! paced by each provider's rate limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enricher::backfill::csv;
use enricher::backfill::report::Outcome;
use enricher::backfill::run::{Options, RowResult, Summary, run};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::both_backends;
use crate::helpers::*;
use crate::pipeline::{CPF, PHONE_NATIONAL, mock_c2s_ok, mock_phone_person, mock_work};

/// Runs `file` to the end; the summary and every row's result.
async fn backfill(app: &TestApp, file: &[u8], options: Options) -> (Summary, Vec<RowResult>) {
    let rows = csv::read(file).expect("usable header");
    let mut seen = Vec::new();
    let summary = run(
        &app.state,
        rows,
        options,
        CancellationToken::new(),
        |row, _| seen.push(row.clone()),
    )
    .await;
    seen.sort_by_key(|r| r.line);
    (summary, seen)
}

/// A Windows-1252 file with `;` and CRLF, as Brazilian Excel saves "CSV": 50 leads of one
/// person (the phone written in several formats), a row with another number of fields, a
/// row without any contact.
fn fifty_leads_one_person() -> Vec<u8> {
    let mut file = b"ID;Nome;Telefone;Observa\xE7\xE3o\r\n".to_vec();
    for i in 0..50 {
        let phone = match i % 3 {
            0 => "(11) 98765-4321",
            1 => "+55 11 98765-4321",
            _ => PHONE_NATIONAL,
        };
        file.extend_from_slice(format!("L-{i};Maria Concei").as_bytes());
        file.extend_from_slice(b"\xE7\xE3o;");
        file.extend_from_slice(format!("{phone};x\r\n").as_bytes());
    }
    file.extend_from_slice(b"L-bad;Maria;11987654321;x;extra\r\n");
    file.extend_from_slice(b"L-none;Maria;;x\r\n");
    file
}

both_backends!(
    fifty_leads_of_one_person_cost_one_lookup_each_and_a_rerun_pays_and_posts_nothing,
    |backend| async move {
        let app = spawn_app(backend).await;
        // One contact lookup and one person lookup for the whole file, over both runs.
        mock_phone_person(&app, 1).await;
        mock_c2s_ok(&app.c2s, 50).await;
        let file = fifty_leads_one_person();

        let (first, rows) = backfill(&app, &file, Options::default()).await;
        assert_eq!(
            (first.rows, first.found, first.invalid, first.failed),
            (52, 50, 2, 0),
            "{first:?}"
        );
        assert_eq!(first.provider_calls, 2, "{first:?}");
        let invalid: Vec<_> = rows
            .iter()
            .filter(|r| r.outcome == Outcome::Invalid)
            .map(|r| r.lead_id.as_ref().map(|l| l.as_str().to_owned()))
            .collect();
        // The row with an extra field has no usable lead id (its values cannot be trusted).
        assert_eq!(invalid, vec![None, Some("L-none".to_owned())]);
        let messages = app.c2s_messages().await;
        assert_eq!(messages.len(), 50);
        // The Windows-1252 name arrived decoded.
        assert!(
            messages.iter().all(|(_, body)| !body.contains('\u{FFFD}')),
            "{messages:?}"
        );

        let (again, _) = backfill(&app, &file, Options::default()).await;
        assert_eq!(
            (again.rows, again.already_done, again.invalid),
            (52, 50, 2),
            "{again:?}"
        );
        assert_eq!(again.provider_calls, 0);
        assert_eq!(app.c2s_messages().await.len(), 50);
        app.verify_mocks().await;
    }
);

/// A valid CPF starting with 0, as a spreadsheet keeps it: without the zero.
const ZERO_CPF: &str = "04567891201";

both_backends!(
    a_cpf_column_skips_the_contact_lookup_even_when_it_lost_its_leading_zero,
    |backend| async move {
        let app = spawn_app(backend).await;
        let mut person = fixture("work_api_person.json");
        person["DadosBasicos"]["cpf"] = ZERO_CPF.into();
        // No Diretrix mock: a contact lookup would hit the catch-all and fail the test.
        mock_work(&app.work_api, ZERO_CPF, person, 1).await;
        mock_c2s_ok(&app.c2s, 1).await;
        let file = format!(
            "\u{FEFF}lead_id,name,phone,cpf\r\nL-1,Maria,{PHONE_NATIONAL},{}\r\n",
            &ZERO_CPF[1..]
        );
        let (summary, rows) = backfill(&app, file.as_bytes(), Options::default()).await;
        assert_eq!((summary.rows, summary.found), (1, 1), "{summary:?}");
        assert_eq!(rows[0].cpf.as_ref().unwrap().as_str(), ZERO_CPF);
        assert_eq!(summary.provider_calls, 1);
        app.verify_mocks().await;
    }
);

both_backends!(
    a_dry_run_calls_no_provider_and_prices_each_distinct_lookup_once,
    |backend| async move {
        let app = spawn_app(backend).await;
        // Only the catch-all is mounted: any call fails the test.
        let file = format!(
            "lead_id,phone,cpf\nL-1,{PHONE_NATIONAL},\nL-2,(11) 98765-4321,\nL-3,11912345678,{CPF}\nL-4,,\n"
        );
        let options = Options {
            dry_run: true,
            ..Options::default()
        };
        let (summary, _) = backfill(&app, file.as_bytes(), options).await;
        let settings = &app.state.settings;
        assert_eq!(
            (summary.rows, summary.would_buy, summary.invalid),
            (4, 3, 1),
            "{summary:?}"
        );
        // One phone lookup (two rows, one person) and one CPF lookup (the row's own CPF).
        assert_eq!(summary.provider_calls, 2);
        let expected = settings.diretrix.price_per_call + settings.work_api.price_per_call;
        assert!((summary.spend - expected).abs() < 1e-9, "{summary:?}");
        let counts = app.store().event_counts().await.unwrap();
        assert!(counts.iter().all(|(_, n)| *n == 0), "{counts:?}");
        app.verify_mocks().await;
    }
);

/// Records when each request arrived and answers "nobody".
struct Stamps(Arc<Mutex<Vec<Instant>>>);

impl Respond for Stamps {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(404)
    }
}

both_backends!(
    a_burst_of_rows_never_exceeds_the_providers_rate,
    |backend| async move {
        const ROWS: usize = 20;
        const RATE: f64 = 5.0;
        let app = spawn_app_with(backend, |s| {
            s.diretrix.max_calls_per_sec = RATE;
            s.workers.concurrency = 32;
        })
        .await;
        let stamps = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("GET"))
            .and(path_regex(r"^/Consultas/Pessoa/Telefone/"))
            .respond_with(Stamps(stamps.clone()))
            .expect(ROWS as u64)
            .mount(&app.diretrix)
            .await;
        let mut file = "lead_id,phone\n".to_owned();
        for i in 0..ROWS {
            file.push_str(&format!("L-{i},119{:08}\n", 12_345_600 + i));
        }
        let options = Options {
            concurrency: ROWS,
            no_message: true,
            ..Options::default()
        };
        let (summary, _) = backfill(&app, file.as_bytes(), options).await;
        assert_eq!(
            (summary.rows, summary.not_found),
            (ROWS as u64, ROWS as u64),
            "{summary:?}"
        );
        let mut stamps = stamps.lock().unwrap().clone();
        stamps.sort();
        assert_eq!(stamps.len(), ROWS);
        // Starts are spaced 1/RATE apart: 20 calls span at least 19 spacings (3.8 s); allow
        // for the mock receiving a call a little late.
        let span = *stamps.last().unwrap() - stamps[0];
        assert!(span >= Duration::from_millis(3_500), "{span:?}");
        // No second holds more calls than the rate (plus the boundary call).
        for (i, first) in stamps.iter().enumerate() {
            let within = stamps[i..]
                .iter()
                .take_while(|t| **t - *first < Duration::from_secs(1))
                .count();
            assert!(
                within <= RATE as usize + 1,
                "{within} calls within a second"
            );
        }
        // Store only: nothing posted.
        assert!(app.c2s_messages().await.is_empty());
        app.verify_mocks().await;
    }
);

/// The real binary, interrupted (Ctrl-C) while rows are in flight: it feeds no more rows, lets
/// the ones in flight end, prints its summary marked as interrupted and exits cleanly, and
/// every row it took is finished in the inbox, none left pending or half-done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_backfill_after_the_rows_in_flight_and_prints_the_summary() {
    use crate::process::World;
    use enricher::store::EventState;

    let w = World::new(Backend::Postgres).await;
    // Nobody behind any phone, answered slowly, so the interrupt lands with rows in flight.
    Mock::given(method("GET"))
        .and(path_regex("^/Consultas/Pessoa/Telefone/"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!([]))
                .set_delay(Duration::from_millis(400)),
        )
        .mount(&w.diretrix)
        .await;
    let rows = 20;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leads.csv");
    let mut text = "lead_id,phone\n".to_owned();
    for i in 0..rows {
        text.push_str(&format!("L-{i},11 91{i:07}\n"));
    }
    std::fs::write(&file, text).unwrap();

    let mut child = w.command(
        &[
            "backfill",
            file.to_str().unwrap(),
            "--concurrency",
            "2",
            "--no-message",
        ],
        &[],
    );
    let asked = || received(&w.diretrix, |p| p.starts_with("/Consultas/"));
    wait_for("a row in flight", Duration::from_secs(30), || async {
        (asked().await > 0).then_some(())
    })
    .await;
    child.interrupt();
    let status = child.wait_exit(Duration::from_secs(30)).await;
    let output = child.output();
    assert!(status.success(), "{status}: {output}");
    let summary = output
        .lines()
        .find(|l| l.starts_with("interrupted: backfill"))
        .unwrap_or_else(|| panic!("no interrupted summary in:\n{output}"));
    let fed = asked().await;
    assert!(
        fed < rows,
        "{fed} of {rows} rows fed after the interrupt: {summary}"
    );
    let counts = w.store.event_counts().await.unwrap();
    assert!(
        counts
            .iter()
            .all(|(state, n)| *n == 0
                || !matches!(state, EventState::Pending | EventState::Processing)),
        "rows left unfinished: {counts:?}"
    );
    let done: i64 = counts
        .iter()
        .filter(|(s, _)| *s == EventState::Done)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        done as usize, fed,
        "each row fed ended done: {counts:?}\n{summary}"
    );
}

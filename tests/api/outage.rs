//! The database going away under load and coming back. The shared Postgres server cannot be
//! restarted (other test runs use it), so the application reaches its database through a
//! TCP proxy owned by the test: taking the proxy down drops every open connection and refuses
//! new ones, exactly what a database restart or failover looks like from the application;
//! bringing it up again on the same port is the database coming back.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::join_all;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{basic_auth, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;
use crate::pipeline::{CPF, PHONE_NATIONAL, mock_c2s_ok, mock_work};

/// A TCP proxy to the database that the test can take down and bring back on the same port.
struct DbProxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl DbProxy {
    async fn start(upstream: SocketAddr) -> DbProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut proxy = DbProxy {
            listen: listener.local_addr().unwrap(),
            upstream,
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let upstream = self.upstream;
        let token = stop.clone();
        let task = tokio::spawn(async move {
            // Dropping the set aborts every connection task, closing both of its sockets.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        connections.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                }
            }
        });
        self.running = Some((stop, task));
    }

    /// The database is gone: open connections are cut, new ones refused.
    async fn down(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            task.await.unwrap();
        }
    }

    /// The database is back, on the same address.
    async fn up(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.listen).unwrap();
        self.serve(socket.listen(128).unwrap());
    }
}

/// The Postgres server the tests use, as an address the proxy can dial.
fn postgres_address() -> SocketAddr {
    let url = url::Url::parse(&postgres_admin_url()).unwrap();
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", url.port().unwrap_or(5432))
        .parse()
        .unwrap()
}

/// How long Diretrix takes, so the first lead's purchase is in flight when the database goes.
const DIRETRIX_DELAY: Duration = Duration::from_millis(1500);

fn lead(n: u32) -> Value {
    c2s_event(
        &format!("lead-{n}"),
        "on_create_lead",
        "2026-03-01T12:00:00Z",
        Some(PHONE_NATIONAL),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_webhooks_get_503_and_afterwards_every_acknowledged_lead_gets_exactly_one_message()
 {
    let mut proxy = DbProxy::start(postgres_address()).await;
    let (listen, upstream) = (proxy.listen, proxy.upstream);
    let app = spawn_app_with(Backend::Postgres, move |s| {
        let mut url = url::Url::parse(s.database.url.expose_secret()).unwrap();
        assert_eq!(url.port().unwrap_or(5432), upstream.port());
        url.set_host(Some(&listen.ip().to_string())).unwrap();
        url.set_port(Some(listen.port())).unwrap();
        s.database.url = url.to_string().into();
    })
    .await;
    // Bought once each although the first purchase's answer arrives with the database gone.
    Mock::given(method("GET"))
        .and(path(format!("/Consultas/Pessoa/Telefone/{PHONE_NATIONAL}")))
        .and(basic_auth(DIRETRIX_USER, DIRETRIX_PASSWORD))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("diretrix_found.json"))
                .set_delay(DIRETRIX_DELAY),
        )
        .expect(1)
        .mount(&app.diretrix)
        .await;
    mock_work(&app.work_api, CPF, fixture("work_api_person.json"), 1).await;
    mock_c2s_ok(&app.c2s, 4).await;

    let first = app.post_c2s_ok(&lead(1)).await;
    wait_for("the Diretrix call", Duration::from_secs(10), || async {
        let calls = app.diretrix.received_requests().await.unwrap_or_default();
        (!calls.is_empty()).then_some(())
    })
    .await;

    proxy.down().await;
    let bodies: Vec<Value> = (2..=4).map(lead).collect();
    let answers = join_all(bodies.iter().map(|b| app.post_c2s(b))).await;
    for answer in answers {
        assert_eq!(answer.status(), 503, "never a 2xx for what was not stored");
    }
    let ready = app
        .http
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        app.c2s_messages().await.is_empty(),
        "nothing posted while the database is down"
    );

    proxy.up().await;
    let mut ids = first;
    for n in 2..=4 {
        // The sender retries its 503s; the pool reconnects on its own.
        ids.extend(app.post_c2s_ok(&lead(n)).await);
    }
    assert_eq!(ids.len(), 4);
    for id in &ids {
        let event = app.wait_final(*id).await;
        assert_eq!(
            (event.state.as_str(), event.outcome.map(|o| o.as_str())),
            ("done", Some("delivered")),
            "event {id}"
        );
    }
    let mut leads: Vec<String> = app
        .c2s_messages()
        .await
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    leads.sort();
    assert_eq!(leads, ["lead-1", "lead-2", "lead-3", "lead-4"]);
    let metrics = app.scrape().await;
    assert!(
        metrics
            .lines()
            .map(crate::operators::without_instance)
            .any(|l| l
                == r#"enricher_webhooks_total{source="c2s",outcome="rejected",reason="unavailable"} 3"#),
        "{metrics}"
    );
    app.verify_mocks().await;
    // Only the acknowledged deliveries are in the inbox: the refused ones left nothing.
    let inbox = crate::dump::all_rows(&app.db.url)
        .await
        .into_iter()
        .filter(|(table, _)| table.ends_with("webhook_inbox"))
        .count();
    assert_eq!(inbox, 4);
}

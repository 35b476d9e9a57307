//! The real `enricher` binary as a child process, configured only by environment variables,
//! for tests that kill it (SIGKILL) at chosen points. The child is killed when the value is
//! dropped, so a failing test leaves no process behind; its output is printed then.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enricher::store::{DynStore, EventRecord};
use serde_json::Value;
use wiremock::MockServer;

use crate::helpers::*;

/// What the child was started with: the database and one mock server per outside API.
pub struct Setup<'a> {
    pub database_url: &'a str,
    pub diretrix: &'a MockServer,
    pub work_api: &'a MockServer,
    pub c2s: &'a MockServer,
    /// Extra `(variable, value)` pairs, applied last.
    pub extra: &'a [(&'a str, &'a str)],
}

pub struct Process {
    child: Child,
    /// `http://127.0.0.1:port`, read from the child's "listening" line.
    pub address: String,
    output: Arc<Mutex<String>>,
}

/// Lease short enough that a killed process's events come back within seconds.
pub const LEASE_SECS: u64 = 3;

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Process {
    /// Starts `enricher serve` with a clean environment and waits for it to listen.
    pub async fn start(setup: &Setup<'_>) -> Process {
        let mut process = Process::spawn(setup, &["serve"]);
        let output = process.output.clone();
        process.address = wait_for(
            "the child to log its listening address",
            Duration::from_secs(20),
            || {
                let text = output.lock().unwrap().clone();
                async move {
                    let line = text.lines().find(|l| l.contains(" listening"))?;
                    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
                    Some(format!("http://{addr}"))
                }
            },
        )
        .await;
        process
    }

    /// Starts `enricher ARGS` with the same clean environment, waiting for nothing.
    pub fn spawn(setup: &Setup<'_>, args: &[&str]) -> Process {
        let lease = LEASE_SECS.to_string();
        let mut vars: Vec<(&str, String)> = vec![
            ("APP_ENV", "development".into()),
            ("DATABASE_URL", setup.database_url.into()),
            // Port 0: the child picks a free port and names it on its "listening" line.
            ("PORT", "0".into()),
            ("ENRICHER__SERVER__HOST", "127.0.0.1".into()),
            ("ENRICHER__METRICS__PORT", "0".into()),
            ("ENRICHER__METRICS__HOST", "127.0.0.1".into()),
            ("ENRICHER__SANDBOX__ENABLED", "false".into()),
            ("ENRICHER__DIRETRIX__BASE_URL", setup.diretrix.uri()),
            ("ENRICHER__DIRETRIX__USER", DIRETRIX_USER.into()),
            ("ENRICHER__DIRETRIX__PASSWORD", DIRETRIX_PASSWORD.into()),
            ("ENRICHER__WORK_API__BASE_URL", setup.work_api.uri()),
            ("ENRICHER__WORK_API__TOKEN", WORK_TOKEN.into()),
            ("ENRICHER__C2S__BASE_URL", setup.c2s.uri()),
            ("ENRICHER__C2S__TOKEN", C2S_TOKEN.into()),
            ("ENRICHER__WORKERS__LEASE_SECS", lease),
            ("ENRICHER__WORKERS__POLL_INTERVAL_MS", "25".into()),
            ("ENRICHER__WORKERS__DRAIN_SECS", "1".into()),
            ("ENRICHER__DELIVERY__BASE_DELAY_MS", "20".into()),
            ("ENRICHER__DELIVERY__MAX_DELAY_SECS", "1".into()),
            ("ENRICHER__DELIVERY__MAX_ATTEMPTS", "6".into()),
            ("RUST_LOG", "info".into()),
            ("NO_COLOR", "1".into()),
        ];
        for (k, v) in setup.extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k, (*v).to_owned()));
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_enricher"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the enricher binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&strip_ansi(&line));
                    out.push('\n');
                }
            });
        }
        Process {
            child,
            address: String::new(),
            output,
        }
    }

    /// SIGKILL: no drain, no destructor, no flush; exactly what a crash looks like.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: what Fly sends on a deploy or scale-down; the process should drain and exit.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// SIGINT: what Ctrl-C sends.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIG{name} delivered");
    }

    /// Waits for the child to exit on its own, up to `deadline`, and returns its status.
    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "the child did not exit within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the child wrote so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- enricher child output ---\n{}", self.output());
        }
    }
}

/// One test's database and mock servers, shared by every process a test starts on them, so
/// `.expect(n)` counts the calls of all of them.
pub struct World {
    pub db: TestDb,
    /// A store of the test's own on the same database, to watch events from outside.
    pub store: DynStore,
    pub diretrix: MockServer,
    pub work_api: MockServer,
    pub c2s: MockServer,
}

impl World {
    pub async fn new(backend: Backend) -> World {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        World {
            db,
            store,
            diretrix: MockServer::start().await,
            work_api: MockServer::start().await,
            c2s: MockServer::start().await,
        }
    }

    /// What a child of this world is started with.
    fn setup<'a>(&'a self, extra: &'a [(&'a str, &'a str)]) -> Setup<'a> {
        Setup {
            database_url: &self.db.url,
            diretrix: &self.diretrix,
            work_api: &self.work_api,
            c2s: &self.c2s,
            extra,
        }
    }

    pub async fn process(&self, extra: &[(&str, &str)]) -> Process {
        Process::start(&self.setup(extra)).await
    }

    /// Starts `enricher ARGS` on this world, waiting for nothing.
    pub fn command(&self, args: &[&str], extra: &[(&str, &str)]) -> Process {
        Process::spawn(&self.setup(extra), args)
    }

    pub async fn wait_final(&self, id: i64) -> EventRecord {
        wait_final(&self.store, id, Duration::from_secs(30)).await
    }

    pub async fn event(&self, id: i64) -> EventRecord {
        self.store.event(id).await.unwrap().unwrap()
    }

    /// Lead ids of the messages the CRM received, in order; the CRM receives nothing else.
    pub async fn posted_leads(&self) -> Vec<String> {
        self.c2s
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| {
                assert!(
                    r.url.path().ends_with("/create_message"),
                    "only messages are posted to the CRM, not {}",
                    r.url.path()
                );
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["leadId"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    pub async fn verify_mocks(&self) {
        self.diretrix.verify().await;
        self.work_api.verify().await;
        self.c2s.verify().await;
    }
}

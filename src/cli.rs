//! The command line: `serve` (default), `migrate`, `check-config` and `backfill`. Each
//! command only wires a library function to arguments, files and the terminal.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{AppEnv, Settings};
use crate::startup::{Application, cancel_on_signal};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "enricher",
    version,
    about = "Enriches CRM leads with person data, paying each provider once per person."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service and the workers (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets redacted) with where each value comes from,
    /// and exit non-zero if the service would refuse it. Opens no connection.
    CheckConfig,
    /// Enrich leads the CRM already has, from a CSV file (see README, "Backfill").
    Backfill(BackfillArgs),
    /// One reconciliation pass: list CRM leads updated since DATE and queue those whose
    /// webhook never arrived.
    Reconcile {
        /// `2026-11-01` (midnight UTC) or an RFC 3339 instant.
        #[arg(long)]
        since: String,
    },
    /// C2S administration.
    #[command(subcommand)]
    C2s(C2sCommand),
}

#[derive(Debug, Subcommand)]
pub enum C2sCommand {
    /// Register URL as the webhook for on_create_lead, on_update_lead and on_close_lead.
    Subscribe { url: url::Url },
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The CSV file: a lead id column and at least one of phone, e-mail, CPF.
    pub file: std::path::PathBuf,
    /// Rows in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Resolve from memory and the database only; report what would be bought and its cost.
    #[arg(long)]
    pub dry_run: bool,
    /// Enrich and store, post no message.
    #[arg(long)]
    pub no_message: bool,
    /// Take only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write one line per row (outcome, tier, CPF masked) to this CSV file.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// Runs the chosen command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = load_and_start_logging()?;
            let app = Application::build(settings).await?;
            cancel_on_signal(app.shutdown_token());
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let settings = load_and_start_logging()?;
            let store = crate::store::connect(&settings.database).await?;
            store.migrate().await?;
            crate::intake::convert_stored_events(store.as_ref()).await?;
            tracing::info!(database = %settings.database.redacted_url(), "migrations applied");
        }
        Command::CheckConfig => check_config()?,
        Command::Backfill(args) => backfill(args).await?,
        Command::Reconcile { since } => {
            let since = parse_since(&since)?;
            let app = offline(load_and_start_logging()?).await?;
            let state = app.state().clone();
            let pass = crate::reconcile::once(&state, since).await?;
            println!(
                "reconcile pages {} listed {} enqueued {} unreadable {}",
                pass.pages, pass.listed, pass.enqueued, pass.unreadable
            );
        }
        Command::C2s(C2sCommand::Subscribe { url }) => {
            let app = offline(load_and_start_logging()?).await?;
            app.state()
                .crm
                .subscribe(&url, &["on_create_lead", "on_update_lead", "on_close_lead"])
                .await?;
            println!("subscribed");
        }
    }
    Ok(())
}

fn load_and_start_logging() -> anyhow::Result<Settings> {
    let settings = Settings::load()?;
    crate::telemetry::init(settings.env);
    crate::telemetry::install_panic_hook();
    Ok(settings)
}

/// Prints the table on stdout, warnings on stderr, and returns the reason the configuration
/// would be refused. No logging: stdout is the table alone.
fn check_config() -> anyhow::Result<()> {
    // Read exactly as `Settings::load` reads.
    let vars: HashMap<String, String> = std::env::vars().collect();
    let mut description =
        crate::config::describe(AppEnv::from_vars(&vars), Path::new("config"), &vars)?;
    print!("{description}");
    for (key, source) in &description.ignored {
        eprintln!("enricher: warning: {key} ({source}) is not a setting; it is ignored");
    }
    match description.error.take() {
        Some(error) => Err(error).context("the configuration would be refused"),
        None => Ok(()),
    }
}

/// `enricher backfill`: the same application state as the service (no listener serves), its
/// workers running beside the feed, progress on stderr, the summary on stdout.
async fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    use crate::backfill::{csv, report, run};
    use std::io::{IsTerminal as _, Write as _};

    let mut settings = load_and_start_logging()?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let rows = csv::read(&bytes).context("the file cannot be used")?;
    let mut report = match &args.report {
        Some(path) => Some(report::ReportWriter::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ))?),
        None => None,
    };
    settings.workers.concurrency = args.concurrency.max(1);
    let app = offline(settings).await?;
    let state = app.state().clone();
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone());
    let workers_stop = CancellationToken::new();
    let workers = (!args.dry_run)
        .then(|| tokio::spawn(crate::worker::run(state.clone(), workers_stop.clone())));

    let options = run::Options {
        concurrency: args.concurrency,
        dry_run: args.dry_run,
        no_message: args.no_message,
        limit: args.limit,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let mut report_error = None;
    let summary = run::run(&state, rows, options, stop, |row, so_far| {
        if let Some(writer) = report.as_mut()
            && let Err(e) = writer.write(&report::ReportLine {
                row: row.line,
                lead_id: row.lead_id.as_ref(),
                outcome: row.outcome,
                tier: row.tier,
                cpf: row.cpf.as_ref(),
                detail: row.detail.as_deref(),
            })
        {
            report_error.get_or_insert(e);
        }
        if terminal {
            eprint!("\r{} {}", bar(so_far.rows, so_far.total), so_far.line());
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
            last_line = std::time::Instant::now();
            eprintln!("backfill: {}", so_far.line());
        }
    })
    .await;
    if terminal {
        eprintln!();
    }
    workers_stop.cancel();
    if let Some(workers) = workers {
        let _ = workers.await;
    }
    if let Some(writer) = report {
        writer.finish()?.flush()?;
    }
    if let Some(e) = report_error {
        return Err(e).context("writing the report");
    }
    println!(
        "{}backfill {}",
        if summary.interrupted {
            "interrupted: "
        } else {
            ""
        },
        summary.line()
    );
    Ok(())
}

/// `[#####.....]`, 20 wide.
fn bar(done: u64, total: u64) -> String {
    let filled = (done * 20).checked_div(total).unwrap_or(20).min(20) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

/// The service's state for a one-off command. The listeners are built but never served, on
/// ephemeral local ports, so a running service on the same host is not in the way.
async fn offline(mut settings: Settings) -> anyhow::Result<Application> {
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.metrics.host = "127.0.0.1".into();
    settings.metrics.port = 0;
    Ok(Application::build(settings).await?)
}

/// `2026-11-01` (midnight UTC) or an RFC 3339 instant.
fn parse_since(raw: &str) -> anyhow::Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(at);
    }
    let date = time::Date::parse(
        raw,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .context("--since takes a date (2026-11-01) or an RFC 3339 instant")?;
    Ok(date.midnight().assume_utc())
}

//! The command line: `serve` (default), `migrate` and `check-config`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{AppEnv, Settings};
use crate::startup::{Application, cancel_on_signal};

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

//! The command line: `serve` (default) and `migrate`.

use clap::{Parser, Subcommand};

use crate::config::Settings;
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
}

/// Runs the chosen command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    crate::telemetry::init(settings.env);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            cancel_on_signal(app.shutdown_token());
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let store = crate::store::connect(&settings.database).await?;
            store.migrate().await?;
            tracing::info!(database = %settings.database.redacted_url(), "migrations applied");
        }
    }
    Ok(())
}

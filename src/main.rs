//! The `enricher` binary: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = enricher::cli::Cli::parse();
    match enricher::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be up yet (a configuration error), so say it on stderr too.
            eprintln!("enricher: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

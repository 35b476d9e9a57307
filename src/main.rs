//! The `enricher` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc rather than the system allocator, for the memory tier's sake (measured in
/// BENCHMARKS.md, "Memory tier"): glibc's malloc spreads small blocks over one arena per
/// thread and keeps the pages of freed ones, so RSS grew far past what the cache held and
/// never came down after `DELETE /cache`; mimalloc packs small blocks tighter and purges
/// freed pages back to the OS shortly after they empty.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

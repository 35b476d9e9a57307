//! The `enricher` binary: parses the command line and hands over to the library.

use clap::Parser;

/// jemalloc rather than the system allocator, for the memory tier's sake (measured in
/// BENCHMARKS.md, "Memory tier"): glibc's malloc keeps the pages of freed blocks in its
/// per-thread arenas, so RSS never came down after `DELETE /cache`. jemalloc's background
/// threads (switched on at start, below) purge freed pages back to the OS within seconds,
/// even when the process is idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Without it freed memory is purged only when a thread happens to allocate again.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("enricher: jemalloc background purging not available: {e}");
    }
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

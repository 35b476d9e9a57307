//! Logging: human-readable in development, JSON lines in production.
//!
//! Our code logs personal data only through the domain types' masked `Display`. Dependencies
//! are another matter: reqwest logs request URLs at debug (the Work API URL holds the token and
//! a CPF), so their levels are pinned below debug here whatever `RUST_LOG` says, unless the
//! operator names such a crate explicitly.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::AppEnv;

/// Crates whose debug output can carry URLs, headers or SQL arguments.
const PINNED: &[&str] = &[
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "sqlx",
    "tower",
    "wiremock",
];

/// The filter for `spec` (a `RUST_LOG`-style string), with the pinned crates held at `warn`
/// unless `spec` names them.
pub fn filter(spec: &str) -> EnvFilter {
    let mut filter = EnvFilter::new(spec);
    for krate in PINNED {
        let named = spec.split(',').any(|d| d.trim().starts_with(krate));
        if !named && let Ok(d) = format!("{krate}=warn").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the global subscriber. Call once, from the binary.
pub fn init(env: AppEnv) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    init_with(env == AppEnv::Production, &spec, std::io::stdout);
}

/// Replaces the default panic hook, which prints the panic message to stderr outside the
/// log format and filter, with [`log_panic`]. Call once, from the binary.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(log_panic));
}

/// What the message of a panic whose text was formatted at run time is logged as.
pub const PANIC_MESSAGE_WITHHELD: &str =
    "(formatted at run time; withheld, it may hold personal data)";

/// Logs a panic as one error event (target `enricher::panic`) with its location. Only a
/// literal message is logged: a message formatted at run time (`expect` on an error, a
/// `Debug` of a value) can carry a phone, a CPF or a token, so its text is withheld; the
/// location says where to look.
pub fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_else(|| "unknown".to_owned());
    let message = info
        .payload()
        .downcast_ref::<&'static str>()
        .copied()
        .unwrap_or(PANIC_MESSAGE_WITHHELD);
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    tracing::error!(target: "enricher::panic", location, thread, message, "panic");
}

/// Installs a subscriber writing to `writer` as the global default.
pub fn init_with<W>(json: bool, spec: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // A second init (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber(json, spec, writer));
    let _ = tracing_log::LogTracer::init();
}

/// The subscriber the service logs through: JSON lines or human-readable text, filtered.
/// Tests install it as a scoped default to capture every line of a run.
pub fn subscriber<W>(
    json: bool,
    spec: &str,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(spec))
        .with_writer(writer)
        .with_target(true);
    if json {
        Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        )
    } else {
        Box::new(builder.finish())
    }
}

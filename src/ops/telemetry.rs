//! Logging setup: text for people, JSON for log pipelines; the level comes from `RUST_LOG`
//! (default `info`). Nothing in the pipeline logs a credential: header values are never logged,
//! and the access log carries the path without its query string.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the subscriber. Lines are written to stderr by a background thread, so a request
/// never waits for a write system call; nothing is dropped (a writer that cannot keep up slows
/// logging down rather than losing access or audit lines). Keep the returned guard alive until
/// the process exits: dropping it flushes what is still buffered.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("authgate-log")
        // The writer thread drains every line queued since it last woke, then flushes: under
        // load one write system call carries many lines, and no line waits past its batch.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // Colour only for a person at a terminal: escape codes in a file or a log pipeline are noise,
    // and formatting them costs time on every line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // The request span's fields (its request id) on every line; the span list would only
        // repeat them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    guard
}

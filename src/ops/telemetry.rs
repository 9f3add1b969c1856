//! Logging setup: text for people, JSON for log pipelines; the level comes from `RUST_LOG`
//! (default `info`). Nothing in the pipeline logs a credential: header values are never logged,
//! and the access log carries the path without its query string.

use clap::ValueEnum;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::ops::log_writer::{batch_writer, FlushGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the subscriber. Lines are batched and written to stderr by a background thread
/// (`log_writer.rs`), so a request neither waits for a write system call nor wakes a thread;
/// nothing is dropped. Keep the returned guard alive until the process exits: dropping it
/// flushes what is still buffered. `None` when the log thread cannot be started: lines then go
/// to stderr directly.
pub fn init(format: LogFormat) -> Option<FlushGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = match batch_writer(std::io::stderr()) {
        Ok((writer, guard)) => (BoxMakeWriter::new(writer), Some(guard)),
        Err(error) => {
            eprintln!(
                "authgate: cannot start the log thread ({error}); logging to stderr directly"
            );
            (BoxMakeWriter::new(std::io::stderr), None)
        }
    };
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

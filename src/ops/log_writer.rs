//! Where log lines go: appended to one shared buffer by the thread that formats them, and
//! written to stderr in batches by a flusher thread. A request never makes a write system call
//! and never wakes another thread for its access line: the flusher wakes on its own every
//! [`FLUSH_INTERVAL`], or at once when a batch reaches [`FLUSH_BYTES`]. Nothing is dropped: past
//! [`MAX_PENDING_BYTES`] writers wait for the flusher (a stderr that cannot keep up slows
//! logging down rather than losing access or audit lines). Dropping the [`FlushGuard`] writes
//! what is pending, waiting at most [`EXIT_WAIT`] for a stderr that does not drain (a stalled
//! log shipper must not keep the process from exiting); lines logged after that go to stderr
//! directly.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Lines reach stderr at most this late.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A batch this large is written at once.
const FLUSH_BYTES: usize = 64 * 1024;
/// Writers wait while this much is pending.
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// How long exit waits for the last batch to be written.
const EXIT_WAIT: Duration = Duration::from_secs(2);

struct Pending {
    lines: Vec<u8>,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The flusher waits here for a full batch, the interval or closing.
    flush: Condvar,
    /// Writers wait here for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` for the fmt layer: each formatted line is one `write` into the batch.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keep it alive until the process exits: dropping it flushes and stops the flusher.
pub struct FlushGuard {
    shared: Arc<Shared>,
    /// Tells when the flusher has written its last batch.
    finished: std::sync::mpsc::Receiver<()>,
}

/// A writer batching into `sink` from a thread named `authgate-log`.
pub fn batch_writer<W: Write + Send + 'static>(
    sink: W,
) -> std::io::Result<(BatchWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            lines: Vec::with_capacity(FLUSH_BYTES),
            closing: false,
        }),
        flush: Condvar::new(),
        room: Condvar::new(),
    });
    let flusher_shared = shared.clone();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("authgate-log".into())
        .spawn(move || {
            flush_loop(&flusher_shared, sink);
            let _ = done.send(());
        })?;
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        FlushGuard { shared, finished },
    ))
}

fn flush_loop<W: Write>(shared: &Shared, mut sink: W) {
    let mut batch = Vec::with_capacity(FLUSH_BYTES);
    loop {
        let closing = {
            let mut pending = shared.lock();
            if pending.lines.len() < FLUSH_BYTES && !pending.closing {
                pending = shared
                    .flush
                    .wait_timeout(pending, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            pending.closing
        };
        shared.room.notify_all();
        if !batch.is_empty() {
            // A log that cannot be written has nowhere to report it; the lines are dropped
            // rather than retried forever.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
        }
        if closing {
            // Lines added after the last swap were swapped out above with it.
            let rest = std::mem::take(&mut shared.lock().lines);
            let _ = sink.write_all(&rest).and_then(|()| sink.flush());
            return;
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.lines.len() >= MAX_PENDING_BYTES && !pending.closing {
            pending = self
                .shared
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.closing {
            // The flusher may have taken its last batch: nobody would drain this buffer.
            drop(pending);
            return std::io::stderr().write(buf);
        }
        pending.lines.extend_from_slice(buf);
        if pending.lines.len() >= FLUSH_BYTES {
            self.shared.flush.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.flush.notify_one();
        self.shared.room.notify_all();
        let _ = self.finished.recv_timeout(EXIT_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_nothing_is_lost_at_exit() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(sink.clone()).unwrap_or_else(|e| panic!("{e}"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("thread {t} line {i}\n");
                        writer
                            .write_all(line.as_bytes())
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap_or_else(|_| panic!("writer thread"));
        }
        drop(guard);
        let written = String::from_utf8(
            sink.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
        .unwrap_or_default();
        for t in 0..4 {
            let mine: Vec<usize> = written
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .filter_map(|n| n.parse().ok())
                .collect();
            assert_eq!(mine, (0..20_000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn a_line_arrives_within_the_flush_interval_without_a_full_batch() {
        let sink = Sink::default();
        let (mut writer, _guard) = batch_writer(sink.clone()).unwrap_or_else(|e| panic!("{e}"));
        writer
            .write_all(b"one line\n")
            .unwrap_or_else(|e| panic!("{e}"));
        // Polled to a generous deadline: the flusher wakes on its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if sink
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_slice()
                == b"one line\n"
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the line never reached the sink");
    }
}

//! Where log lines go: standard error, one whole line at a time, around whatever else draws
//! there. A progress bar (`projector rebuild` on a terminal) redraws its line in place; a log
//! line written in the middle of it is glued onto the bar. While something has
//! [`share_stderr_with`], each log line is written inside its `suspend`, which clears the bar,
//! lets the line through and draws the bar again below it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Runs a write while whatever shares standard error steps aside.
pub type Suspend = Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

static SHARED_WITH: RwLock<Option<Suspend>> = RwLock::new(None);
/// Whether [`SHARED_WITH`] holds anything: the services never share standard error, and their
/// every log line then goes straight to it, unbuffered and unlocked, as before.
static SHARED: AtomicBool = AtomicBool::new(false);

/// From now on every log line is written inside `suspend` (a progress bar's, say), until
/// [`release_stderr`].
pub fn share_stderr_with(suspend: Suspend) {
    *SHARED_WITH.write() = Some(suspend);
    SHARED.store(true, Ordering::Release);
}

/// Log lines go straight to standard error again.
pub fn release_stderr() {
    SHARED.store(false, Ordering::Release);
    *SHARED_WITH.write() = None;
}

/// The `tracing` writer of every binary: standard error itself, or, while something shares it,
/// a [`LineWriter`] that writes each event whole inside the sharer's suspend.
pub(crate) fn stderr_lines() -> LogWriter {
    if SHARED.load(Ordering::Acquire) {
        LogWriter::Shared(LineWriter {
            line: Vec::new(),
            sink: std::io::stderr(),
        })
    } else {
        LogWriter::Direct(std::io::stderr())
    }
}

/// Where one log event goes.
pub(crate) enum LogWriter {
    /// Nothing else draws on standard error: straight to it (the formatter writes a line at once).
    Direct(std::io::Stderr),
    /// Something does: buffered, then written whole inside its suspend.
    Shared(LineWriter<std::io::Stderr>),
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LogWriter::Direct(stderr) => stderr.write(buf),
            LogWriter::Shared(line) => line.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            LogWriter::Direct(stderr) => stderr.write_all(buf),
            LogWriter::Shared(line) => line.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LogWriter::Direct(stderr) => stderr.flush(),
            LogWriter::Shared(line) => line.flush(),
        }
    }
}

/// One log event's bytes, written at once to `sink` (through the sharer's suspend, if any).
pub(crate) struct LineWriter<W: Write> {
    line: Vec<u8>,
    sink: W,
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LineWriter<W> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let (line, sink) = (&self.line, &mut self.sink);
        // A log line that cannot be written has nowhere else to go.
        let mut write = || drop(sink.write_all(line).and_then(|()| sink.flush()));
        let shared = SHARED_WITH.read().clone();
        match shared {
            Some(suspend) => suspend(&mut write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_line_is_written_whole_inside_the_sharers_suspend() {
        let inside = Arc::new(AtomicBool::new(false));
        let seen_inside = Arc::new(AtomicBool::new(false));
        /// A sink that records whether it was written while the bar stood aside.
        struct Sink(Arc<AtomicBool>, Arc<AtomicBool>, Vec<u8>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.1
                    .store(self.0.load(Ordering::SeqCst), Ordering::SeqCst);
                self.2.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let flag = inside.clone();
        share_stderr_with(Arc::new(move |write: &mut dyn FnMut()| {
            flag.store(true, Ordering::SeqCst);
            write();
            flag.store(false, Ordering::SeqCst);
        }));
        let mut writer = LineWriter {
            line: Vec::new(),
            sink: Sink(inside.clone(), seen_inside.clone(), Vec::new()),
        };
        writer.write_all(b"{\"message\":").unwrap();
        assert!(
            !seen_inside.load(Ordering::SeqCst),
            "nothing written before the line ends"
        );
        writer.write_all(b"\"x\"}\n").unwrap();
        drop(writer);
        assert!(matches!(stderr_lines(), LogWriter::Shared(_)));
        release_stderr();
        assert!(
            matches!(stderr_lines(), LogWriter::Direct(_)),
            "alone: straight to stderr"
        );
        assert!(seen_inside.load(Ordering::SeqCst), "written inside suspend");
    }
}

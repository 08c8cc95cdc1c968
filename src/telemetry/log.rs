//! Where log lines go: stderr, through a writer that cannot fail. When stderr is a pipe whose
//! reader went away (a log collector restarting, `consul-dns | head`), a write fails with
//! EPIPE; the line is dropped and counted (`consul_dns_log_write_failures_total`) and the
//! daemon carries on. Nothing on this path prints or panics: a log line that cannot be written
//! must never take the process down with it.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use super::metrics::Metrics;

/// Makes one [`LineWriter`] per event, on stderr.
#[derive(Clone, Copy)]
pub(crate) struct Stderr {
    metrics: &'static Metrics,
}

impl Stderr {
    pub(crate) fn new(metrics: &'static Metrics) -> Stderr {
        Stderr { metrics }
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter<io::StderrLock<'static>>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { inner: io::stderr().lock(), metrics: self.metrics, failed: false }
    }
}

/// Writes one event's bytes to `inner`; the first error drops the rest of the line and counts
/// it once. Reports success to the caller either way.
pub(crate) struct LineWriter<W: Write> {
    inner: W,
    metrics: &'static Metrics,
    failed: bool,
}

impl<W: Write> LineWriter<W> {
    #[cfg(test)]
    fn new(inner: W, metrics: &'static Metrics) -> LineWriter<W> {
        LineWriter { inner, metrics, failed: false }
    }
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.failed && self.inner.write_all(buf).is_err() {
            self.failed = true;
            self.metrics.log_write_failed();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.failed && self.inner.flush().is_err() {
            self.failed = true;
            self.metrics.log_write_failed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_failed_write_is_dropped_and_counted_once_per_line() {
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let mut line = LineWriter::new(Broken, metrics);
        assert_eq!(line.write(b"first part ").unwrap(), 11);
        line.write_all(b"second part\n").unwrap();
        line.flush().unwrap();
        assert_eq!(metrics.log_write_failures(), 1);
        LineWriter::new(Broken, metrics).write_all(b"next line\n").unwrap();
        assert_eq!(metrics.log_write_failures(), 2);
    }

    #[test]
    fn a_working_writer_gets_every_byte() {
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let mut out = Vec::new();
        let mut line = LineWriter::new(&mut out, metrics);
        line.write_all(b"one line\n").unwrap();
        line.flush().unwrap();
        assert_eq!(out, b"one line\n");
        assert_eq!(metrics.log_write_failures(), 0);
    }
}

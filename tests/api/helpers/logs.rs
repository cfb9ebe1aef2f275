//! Log capture: what the server logged, to search.

use super::*;

/// Everything every test has logged so far, at debug level and finer for
/// latchkey itself (unless [`capture_logs_with`] said otherwise).
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(Arc::default)
}

pub fn capture_logs() {
    capture_logs_with("debug,latchkey=trace");
}

/// Captures every log line from now on, filtered by `filter`; the first
/// call in a test binary sets the filter for all of it.
pub fn capture_logs_with(filter: &str) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let buffer = Arc::clone(log_buffer());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&buffer)))
            .try_init();
    });
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

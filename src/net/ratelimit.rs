//! Refusal logs that cannot flood: at most a few lines per second, then one summary line.

use std::fmt::Arguments;
use std::time::{Duration, Instant};

/// Lines logged per window; the rest are counted and summarised.
const LINES_PER_WINDOW_MAX: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);

pub struct LogLimiter {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter { window_start: Instant::now(), logged: 0, suppressed: 0 }
    }
}

impl LogLimiter {
    fn admit(&mut self) -> bool {
        if self.window_start.elapsed() >= WINDOW {
            self.flush_suppressed();
            self.window_start = Instant::now();
            self.logged = 0;
        }
        if self.logged < LINES_PER_WINDOW_MAX {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    pub fn warn(&mut self, message: Arguments<'_>) {
        if self.admit() {
            tracing::warn!("{message}");
        }
    }

    pub fn info(&mut self, message: Arguments<'_>) {
        if self.admit() {
            tracing::info!("{message}");
        }
    }

    /// Logs how many lines were dropped since the last summary.
    pub fn flush_suppressed(&mut self) {
        if self.suppressed > 0 && self.window_start.elapsed() >= WINDOW {
            tracing::warn!(suppressed = self.suppressed, "similar network refusals not logged");
            self.suppressed = 0;
        }
    }
}

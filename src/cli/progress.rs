//! Progress of a long command (`import`, `export`, `sync`, `peers sync`,
//! `negentropy build`) on stderr: an indicatif bar with rate and ETA when
//! the total is known (a spinner with the rate when not) on a terminal; on
//! anything else, plain lines — one at each tenth of a known total and at
//! least every [`PLAIN_EVERY`] — that a log collector keeps; nothing with
//! `--quiet`. The command's summary line is printed either way.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Longest gap between two plain progress lines.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Plain,
    Quiet,
}

impl Mode {
    /// A bar on a terminal, plain lines elsewhere, nothing when quiet.
    pub fn for_stderr(quiet: bool) -> Mode {
        match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Bar,
            (false, false) => Mode::Plain,
        }
    }
}

/// One command's progress.
pub struct Progress {
    label: String,
    /// What is counted ("events", "bytes").
    unit: &'static str,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    plain: bool,
    position: u64,
    started: Instant,
    last_line: Instant,
    /// The tenth of the total the last plain line reported.
    last_tenth: u64,
    /// The last message (`sync`: round, have, need).
    message: String,
}

impl Progress {
    pub fn new(mode: Mode, label: &str, unit: &'static str, total: Option<u64>) -> Progress {
        let progress =
            Progress::with_target(mode, label, unit, total, ProgressDrawTarget::stderr());
        // Redrawn while the command waits (the rate and ETA move on).
        if let Some(bar) = &progress.bar {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        progress
    }

    /// [`Progress::new`] drawing the bar on `target` (tests).
    pub fn with_target(
        mode: Mode,
        label: &str,
        unit: &'static str,
        total: Option<u64>,
        target: ProgressDrawTarget,
    ) -> Progress {
        let bar =
            (mode == Mode::Bar).then(|| {
                let bar = match total {
                Some(total) => ProgressBar::with_draw_target(Some(total), target).with_style(
                    ProgressStyle::with_template(
                        "{prefix} {wide_bar} {human_pos}/{human_len} {msg} ({per_sec}, ETA {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
                None => ProgressBar::with_draw_target(None, target).with_style(
                    ProgressStyle::with_template("{prefix} {spinner} {human_pos} {msg} ({per_sec})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
                bar.set_prefix(label.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            });
        let now = Instant::now();
        Progress {
            label: label.to_string(),
            unit,
            total,
            bar,
            plain: mode == Mode::Plain,
            position: 0,
            started: now,
            last_line: now,
            last_tenth: 0,
            message: String::new(),
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.set(self.position + n);
    }

    /// The count so far.
    pub fn set(&mut self, position: u64) {
        self.position = position;
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
        if self.plain {
            self.plain_line(false);
        }
    }

    /// The total, once it is known (`sync`: after reconciliation).
    pub fn set_total(&mut self, total: u64) {
        if self.total != Some(total) {
            self.total = Some(total);
            if let Some(bar) = &self.bar {
                bar.set_length(total);
            }
        }
    }

    /// Extra words after the count (`round 3 · need 120`).
    pub fn message(&mut self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.clone());
        }
        self.message = message;
    }

    /// Clears the bar (the command prints its own summary next).
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn plain_line(&mut self, force: bool) {
        let tenth = self
            .total
            .filter(|t| *t > 0)
            .map_or(0, |t| self.position.saturating_mul(10) / t);
        let due = tenth > self.last_tenth || self.last_line.elapsed() >= PLAIN_EVERY;
        if !(due || force) {
            return;
        }
        self.last_tenth = tenth;
        self.last_line = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.position as f64 / secs;
        let of = match self.total {
            Some(total) => format!("{}/{total}", self.position),
            None => self.position.to_string(),
        };
        let extra = match self.message.is_empty() {
            true => String::new(),
            false => format!(" · {}", self.message),
        };
        eprintln!("{}: {of} {}{extra} ({rate:.0}/s)", self.label, self.unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A terminal that keeps what is drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_terminal_gets_a_bar_with_the_count_and_eta() {
        let screen = Screen::default();
        let target = ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let mut progress = Progress::with_target(Mode::Bar, "import", "events", Some(200), target);
        progress.set(100);
        // Draws are rate-limited; abandoning forces the last one as it is.
        if let Some(bar) = &progress.bar {
            bar.abandon();
        }
        let drawn = screen.0.lock().unwrap().clone();
        assert!(drawn.contains("import"), "{drawn:?}");
        assert!(drawn.contains("100/200"), "{drawn:?}");
        assert!(drawn.contains("ETA"), "{drawn:?}");
        progress.finish();
    }

    #[test]
    fn quiet_and_plain_draw_no_bar() {
        let target = || ProgressDrawTarget::term_like(Box::new(Screen::default()));
        let quiet = Progress::with_target(Mode::Quiet, "x", "events", Some(1), target());
        assert!(quiet.bar.is_none() && !quiet.plain);
        let plain = Progress::with_target(Mode::Plain, "x", "events", Some(1), target());
        assert!(plain.bar.is_none() && plain.plain);
    }
}

//! Progress of long jobs (preparing data now, the training loop later), always on stderr so that stdout stays
//! machine-readable.
//!
//! One API, three looks, chosen once when the reporter is made:
//! - on a terminal, an indicatif bar redrawn in place, with rate and ETA;
//! - when stderr is a file or a pipe (CI logs, `2> log`), plain lines, at most one every `LINE_INTERVAL` plus a
//!   final one, because a bar's redraws would fill a log with control characters and half-drawn lines;
//! - nothing at all when the caller asks for silence (`--quiet`, tests).
//!
//! Whatever the look, `finish` ends with the same one-line summary (amount, time, average rate), so a log and a
//! terminal record the same result. The reporter only counts and prints: it never fails and never decides
//! anything, so work code can call it unconditionally.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Plain-line mode prints at most one progress line per this interval (the final line always comes).
pub const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// What the counted amount is: bytes are shown as KiB/MiB/GiB, anything else as a count and a plain word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// A plural noun such as "tokens" or "steps".
    Items(&'static str),
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `Bar` when stderr is a terminal, else `Lines`.
    Auto,
    /// An in-place bar with rate and ETA (indicatif).
    Bar,
    /// A plain line at most every `LINE_INTERVAL`, and a final one.
    Lines,
    /// Nothing.
    Silent,
}

impl Style {
    /// `Auto` decided for this process's stderr.
    fn resolve(self) -> Style {
        match self {
            Style::Auto if std::io::stderr().is_terminal() => Style::Bar,
            Style::Auto => Style::Lines,
            other => other,
        }
    }
}

/// Counts progress towards an optional total and shows it on stderr (see the module doc). Cheap to update from
/// a hot loop: `inc` is an atomic add, plus a clock read in `Lines` style.
pub struct Progress {
    label: String,
    /// In `unit`s; None when the total is unknown (no percentage or ETA then).
    total: Option<u64>,
    unit: Unit,
    /// Never `Auto`.
    style: Style,
    /// Only in `Bar` style.
    bar: Option<ProgressBar>,
    position: AtomicU64,
    started: Instant,
    /// When the last plain line was printed (`Lines` style), and the message shown after the numbers.
    state: Mutex<LineState>,
    finished: AtomicBool,
}

struct LineState {
    last_line: Instant,
    message: String,
}

impl Progress {
    /// A reporter for `label` ("prepare", "train") counting towards `total` `unit`s, shown as a bar on a
    /// terminal and as plain lines otherwise.
    pub fn new(label: impl Into<String>, total: Option<u64>, unit: Unit) -> Self {
        Self::with_style(label, total, unit, Style::Auto)
    }

    /// As `new`, in the given style.
    pub fn with_style(label: impl Into<String>, total: Option<u64>, unit: Unit, style: Style) -> Self {
        let label = label.into();
        let style = style.resolve();
        let bar = (style == Style::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            bar.set_style(bar_style(total.is_some(), unit));
            bar.set_prefix(label.clone());
            bar
        });
        let now = Instant::now();
        Progress {
            label,
            total,
            unit,
            style,
            bar,
            position: AtomicU64::new(0),
            started: now,
            state: Mutex::new(LineState { last_line: now, message: String::new() }),
            finished: AtomicBool::new(false),
        }
    }

    /// A reporter that shows nothing (it still counts).
    pub fn silent() -> Self {
        Self::with_style("", None, Unit::Items(""), Style::Silent)
    }

    /// Counts `n` more units done.
    pub fn inc(&self, n: u64) {
        self.position.fetch_add(n, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.style == Style::Lines => {
                let mut state = self.lock();
                if state.last_line.elapsed() >= LINE_INTERVAL {
                    state.last_line = Instant::now();
                    eprintln!("{}", self.line(&state.message, false));
                }
            }
            None => {}
        }
    }

    /// Sets the short text shown after the numbers (e.g. "338,025 tokens" or "loss 3.21").
    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        if let Some(bar) = &self.bar {
            bar.set_message(message.clone());
        }
        self.lock().message = message;
    }

    /// Prints `text` on its own line above the bar (or as a plain line), unless silent.
    pub fn println(&self, text: impl AsRef<str>) {
        match (&self.bar, self.style) {
            (Some(bar), _) => bar.suspend(|| eprintln!("{}", text.as_ref())),
            (None, Style::Lines) => eprintln!("{}", text.as_ref()),
            _ => {}
        }
    }

    /// Runs `f` (which prints to the terminal) with the bar cleared, and redraws the bar after it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Units counted so far.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// Time since the reporter was made.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Clears the bar and prints the final line (amount, time, average rate, message), once; unless silent.
    pub fn finish(&self) {
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.style != Style::Silent {
            eprintln!("{}", self.line(&self.lock().message, true));
        }
    }

    /// One plain line: `label: 1.00 MiB / 4.00 MiB (25%) | 512.00 KiB/s | ETA 6 seconds | message` while running,
    /// `label: done, 4.00 MiB in 8.0 s (512.00 KiB/s) | message` when `done`.
    fn line(&self, message: &str, done: bool) -> String {
        let position = self.position();
        let seconds = self.elapsed().as_secs_f64();
        // Average since the start: steadier than an instantaneous rate for lines seconds apart.
        let rate = if seconds > 0.0 { position as f64 / seconds } else { 0.0 };
        let mut line = if done {
            format!(
                "{}: done, {} in {:.1} s ({})",
                self.label,
                amount(self.unit, position),
                seconds,
                per_second(self.unit, rate)
            )
        } else {
            let mut line = format!("{}: {}", self.label, amount(self.unit, position));
            if let Some(total) = self.total {
                let percent = if total > 0 { 100.0 * position as f64 / total as f64 } else { 100.0 };
                line += &format!(" / {} ({percent:.0}%)", amount(self.unit, total));
            }
            line += &format!(" | {}", per_second(self.unit, rate));
            if let (Some(total), true) = (self.total, rate > 0.0) {
                let eta = Duration::from_secs_f64(total.saturating_sub(position) as f64 / rate);
                line += &format!(" | ETA {}", HumanDuration(eta));
            }
            line
        };
        if !message.is_empty() {
            line += &format!(" | {message}");
        }
        line
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LineState> {
        // A panic while holding the lock leaves only a message and a time behind: still fine to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Progress {
    /// A reporter dropped unfinished (its job failed) clears its bar so that the error prints on a clean line.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}

/// `n` units as text: "1.43 MiB" or "1,500 tokens".
fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Bytes => HumanBytes(n).to_string(),
        Unit::Items(name) => format!("{} {name}", HumanCount(n)),
    }
}

/// A rate as text: "1.43 MiB/s" or "1,500 tokens/s" (one decimal below 100/s).
fn per_second(unit: Unit, rate: f64) -> String {
    match unit {
        Unit::Bytes => format!("{}/s", HumanBytes(rate as u64)),
        Unit::Items(name) if rate < 100.0 => format!("{rate:.1} {name}/s"),
        Unit::Items(name) => format!("{} {name}/s", HumanCount(rate as u64)),
    }
}

/// The bar's look: a bar with percentage and ETA when the total is known, else a spinner and the count.
fn bar_style(has_total: bool, unit: Unit) -> ProgressStyle {
    ProgressStyle::with_template(&bar_template(has_total, unit)).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// indicatif's template for `bar_style` (unit names are plain words, so they need no escaping).
fn bar_template(has_total: bool, unit: Unit) -> String {
    let (count, total, rate) = match unit {
        Unit::Bytes => ("{bytes}".to_string(), "{total_bytes}", "{bytes_per_sec}"),
        Unit::Items(name) => (format!("{{human_pos}} {name}"), "{human_len}", "{per_sec}"),
    };
    if has_total {
        format!("{{prefix}} [{{bar:30}}] {count} / {total} ({{percent}}%) | {rate} | ETA {{eta}} | {{msg}}")
    } else {
        format!("{{spinner}} {{prefix}} {count} | {rate} | {{elapsed}} | {{msg}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_amount_percentage_and_message() {
        let progress = Progress::with_style("prepare", Some(4 << 20), Unit::Bytes, Style::Silent);
        progress.position.store(1 << 20, Ordering::Relaxed);
        let line = progress.line("12 tokens", false);
        assert!(line.starts_with("prepare: 1.00 MiB / 4.00 MiB (25%) | "), "{line}");
        assert!(line.ends_with(" | 12 tokens"), "{line}");
    }

    #[test]
    fn final_line_says_done_with_the_total_amount() {
        let progress = Progress::with_style("train", Some(200), Unit::Items("steps"), Style::Silent);
        progress.inc(200);
        let line = progress.line("", true);
        assert!(line.starts_with("train: done, 200 steps in "), "{line}");
        assert!(line.contains(" steps/s)"), "{line}");
    }

    #[test]
    fn unknown_total_has_no_percentage_or_eta() {
        let progress = Progress::with_style("download", None, Unit::Bytes, Style::Silent);
        progress.inc(1500);
        let line = progress.line("", false);
        assert!(!line.contains('%') && !line.contains("ETA"), "{line}");
    }

    #[test]
    fn every_bar_template_parses() {
        for unit in [Unit::Bytes, Unit::Items("tokens")] {
            for has_total in [true, false] {
                let template = bar_template(has_total, unit);
                assert!(ProgressStyle::with_template(&template).is_ok(), "indicatif refuses {template:?}");
            }
        }
    }
}

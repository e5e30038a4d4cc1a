//! Progress on a terminal only: a bar or a spinner on stderr when a person
//! watches (stdout and stderr are terminals, and no --json), and nothing at
//! all otherwise, so that pipes, files and scripts get only the output.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Whether progress may be drawn: not --json, and both outputs are a terminal.
pub fn shown(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A bar of `len` steps drawn with `template` (indicatif's), when [`shown`].
pub fn bar(json: bool, len: u64, template: &str) -> Option<ProgressBar> {
    if !shown(json) {
        return None;
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    Some(bar)
}

/// A spinner showing `msg` and the time spent, when stderr is a terminal
/// (what it waits for goes to stdout, which may be a pipe).
pub fn spinner(msg: String) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

//! Progress bars on stderr, hidden when stderr is not a terminal so logs and pipes stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` items (or a spinner when the length is unknown).
pub fn bar(len: Option<usize>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n as u64).with_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg:>12} {spinner} {pos} rows ({per_sec})")
                .expect("valid template"),
        ),
    };
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_message(what.to_string());
    pb
}

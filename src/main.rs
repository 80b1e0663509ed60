//! The `tailor` binary: command-line glue over the tailor crates.

mod args;
mod data;
mod eval;
mod hub;
mod interrupt;
mod predict;
mod progress;
mod train;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, DataCommand};

/// candle sizes its matmul parallelism from `RAYON_NUM_THREADS` on every call and, when the
/// variable is unset, re-reads `/proc/cpuinfo` each time (seen in profiles of small-model
/// training). Setting it once to candle's own default keeps the same thread count
/// without the repeated file reads; a value the user set is kept.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle's own default: physical cores, within the CPUs this process may use.
        let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = num_cpus::get_physical().clamp(1, allowed);
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

fn main() -> ExitCode {
    pin_thread_count();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data { command } => match command {
            DataCommand::Stats(a) => data::stats(a),
            DataCommand::Split(a) => data::split(a),
            DataCommand::Preview(a) => data::preview(a),
            DataCommand::Synth(a) => data::synth(a),
        },
        Command::Predict(a) => predict::predict(a),
        Command::Train(a) => train::train(a),
        Command::Export(a) => train::export(a),
        Command::Eval(a) => eval::eval(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, as ripgrep does.
            eprintln!("tailor: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

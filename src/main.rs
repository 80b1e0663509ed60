//! The `tailor` binary: command-line glue over the tailor crates.

mod args;
mod data;
mod demo;
mod eval;
mod hub;
mod interrupt;
mod predict;
mod progress;
mod train;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, DataCommand};

/// Thread settings for candle's CPU backend, unless the user set them.
///
/// - `RAYON_NUM_THREADS` (matmul parallelism): candle reads it on every matmul and, when it is
///   unset, re-reads `/proc/cpuinfo` each time (seen in profiles); it is set once to candle's own
///   default, the physical cores this process may use.
/// - `CANDLE_NUM_THREADS=1`: element-wise ops run on the calling thread instead of candle 0.11.1's
///   spin-waiting barrier pool. With the pool, profiles of LoRA training showed 30–45 % of the
///   time in the main thread waiting for pool workers, and any other load on the machine made a
///   training step 4–5× slower (mid-size model: 6.6–10.2 s instead of 1.8 s per update); without
///   it the same update took 2.0–2.3 s on an idle machine and 2.3–2.9 s under that load.
fn configure_threads() {
    let unset = |k: &str| std::env::var_os(k).is_none();
    if unset("RAYON_NUM_THREADS") {
        // candle's own default: physical cores, within the CPUs this process may use.
        let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = num_cpus::get_physical().clamp(1, allowed);
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    if unset("CANDLE_NUM_THREADS") {
        // SAFETY: as above.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

fn main() -> ExitCode {
    configure_threads();
    tailor_model::runtime::retain_freed_memory();
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
        Command::Demo(a) => demo::demo(a),
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

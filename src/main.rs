//! The `tailor` binary: command-line glue over the tailor crates.

mod args;
mod data;
mod hub;
mod interrupt;
mod predict;
mod progress;
mod train;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, DataCommand};

fn main() -> ExitCode {
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

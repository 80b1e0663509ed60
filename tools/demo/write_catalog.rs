//! Stop-gap writer of a synthetic catalog *with* the generic `caption` column, until
//! `tailor data synth` writes it (see tools/demo/EXPERIMENTS.md, "What is left").
//!
//! Build against the release tailor-data library (no Cargo package of its own):
//!
//!     cargo build --release -p tailor-data
//!     rustc --edition 2024 -O -o target/demo-write-catalog tools/demo/write_catalog.rs \
//!         -L dependency=target/release/deps \
//!         --extern tailor_data=$(ls -t target/release/deps/libtailor_data-*.rlib | head -1)
//!
//! Usage: `write-catalog OUT.parquet PRODUCTS SEED` — PRODUCTS × 4 views of 64×96 PNGs, the
//! recipe's columns (image, category1, category2, text, item_ID) plus `caption`.

use std::path::Path;

use tailor_data::catalog::write::{Record, write_parquet};
use tailor_data::synth::{self, ImageFormat, SynthConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} OUT.parquet PRODUCTS SEED", args[0]);
        std::process::exit(2);
    }
    let products: usize = args[2].parse().expect("PRODUCTS is a number");
    let seed: u64 = args[3].parse().expect("SEED is a number");
    let cfg = SynthConfig {
        products,
        views_per_product: 4,
        seed,
        width: 64,
        height: 96,
        format: ImageFormat::Png,
    };
    let records = synth::generate(&cfg).map(|r| Record {
        image_name: format!("{}.png", r.item_id),
        image: r.image,
        columns: vec![
            ("category1".into(), Some(r.category1)),
            ("category2".into(), Some(r.category2)),
            ("text".into(), Some(r.text)),
            ("caption".into(), Some(r.caption)),
            ("item_ID".into(), Some(r.item_id)),
        ],
    });
    let n = write_parquet(Path::new(&args[1]), records).expect("write parquet");
    eprintln!("wrote {n} rows to {}", args[1]);
}

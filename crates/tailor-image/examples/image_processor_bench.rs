//! Throughput of [`ImageProcessor::process_into`] on one thread, for `tools/bench/image_processor.sh`.
//!
//! Usage: `image_processor_bench <dir> <repeats> [batch]`. Decodes every `*.png` / `*.jpg` in
//! `<dir>` (sorted by name; decoding is not timed), then, after one untimed warm-up pass,
//! processes the whole set `repeats` times in batches of `batch` images (default 8), appending each
//! batch to one reused buffer as a collator would. Prints one JSON object with the best and median
//! pass times and, per image, a position-weighted checksum of the `pixel_values` bits that the
//! Python side recomputes to check bit-identity: `sum((bits[i] as u64) * (i % 65521 + 1)) mod 2^64`.

use std::path::PathBuf;
use std::time::Instant;

use tailor_image::{ImageProcessor, ProcessorConfig, RgbImage, decode};

fn checksum(values: &[f32]) -> u64 {
    values.iter().enumerate().fold(0u64, |acc, (i, v)| {
        acc.wrapping_add(u64::from(v.to_bits()).wrapping_mul(i as u64 % 65521 + 1))
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: image_processor_bench <dir> <repeats> [batch]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let repeats: usize = args[2].parse().expect("repeats");
    let batch: usize = args.get(3).map_or(8, |b| b.parse().expect("batch"));

    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    paths.sort();
    let images: Vec<RgbImage> = paths
        .iter()
        .map(|p| decode(&std::fs::read(p).expect("read")).expect("decode"))
        .collect();

    let processor = ImageProcessor::new(ProcessorConfig::qwen2_5_vl()).expect("config");

    // Per-image checksums for the bit-identity check, from a separate buffer.
    let mut single = Vec::new();
    let checksums: Vec<u64> = images
        .iter()
        .map(|image| {
            single.clear();
            processor.process_into(image, &mut single).expect("process");
            checksum(&single)
        })
        .collect();

    // One untimed pass warms the caches and the per-thread scratch buffers and grows the batch
    // buffer to its final size, as it would be after the first batches of a training run.
    let mut buffer = Vec::new();
    let pass = |buffer: &mut Vec<f32>| {
        let mut patches = 0usize;
        for chunk in images.chunks(batch) {
            buffer.clear();
            for image in chunk {
                patches += processor
                    .process_into(image, buffer)
                    .expect("process")
                    .patches();
            }
            std::hint::black_box(&*buffer);
        }
        patches
    };
    pass(&mut buffer);
    let mut passes = Vec::with_capacity(repeats);
    let mut patches = 0;
    for _ in 0..repeats {
        let start = Instant::now();
        patches = pass(&mut buffer);
        passes.push(start.elapsed().as_secs_f64());
    }
    passes.sort_by(f64::total_cmp);
    let best = passes[0];
    let median = passes[passes.len() / 2];
    let sums: Vec<String> = checksums.iter().map(|c| format!("\"{c}\"")).collect();
    println!(
        "{{\"images\": {}, \"patches\": {patches}, \"repeats\": {repeats}, \"batch\": {batch}, \
         \"best_s\": {best}, \"median_s\": {median}, \"images_per_s\": {}, \"checksums\": [{}]}}",
        images.len(),
        images.len() as f64 / median,
        sums.join(", ")
    );
}

//! Throughput of [`ImageProcessor::process_into`] on one thread, for `tools/bench/image_processor.sh`.
//!
//! Usage: `image_processor_bench <dir> <repeats> [batch]`. Decodes every `*.png` / `*.jpg` in
//! `<dir>` (sorted by name; decoding is not timed), then processes the whole set `repeats` times
//! in batches of `batch` images (default 8), appending to one reused buffer per batch as a
//! collator would. Prints one JSON object with the best and median pass times and, per image, a
//! position-weighted checksum of the `pixel_values` bits that the Python side recomputes to check
//! bit-identity: `sum((bits[i] as u64) * (i % 65521 + 1)) mod 2^64`.

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
    let mut buffer = Vec::new();

    // One untimed pass warms the caches and the per-thread scratch buffers, and gives the
    // per-image checksums.
    let mut checksums = Vec::with_capacity(images.len());
    for image in &images {
        buffer.clear();
        processor.process_into(image, &mut buffer).expect("process");
        checksums.push(checksum(&buffer));
    }

    let mut passes = Vec::with_capacity(repeats);
    let mut patches = 0usize;
    for _ in 0..repeats {
        let start = Instant::now();
        patches = 0;
        for chunk in images.chunks(batch) {
            buffer.clear();
            for image in chunk {
                patches += processor.process_into(image, &mut buffer).expect("process").patches();
            }
            std::hint::black_box(&buffer);
        }
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

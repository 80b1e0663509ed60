use std::time::Instant;
use tailor_image::*;
fn main() {
    let file = std::env::args().nth(1).unwrap();
    let what = std::env::args().nth(2).unwrap();
    let n: usize = std::env::args().nth(3).unwrap().parse().unwrap();
    let bytes = std::fs::read(file).unwrap();
    let img = decode(&bytes).unwrap();
    let p = ImageProcessor::new(ProcessorConfig::qwen2_5_vl()).unwrap();
    let (h, w) = p.target_size(img.height, img.width).unwrap();
    let r = resize_bicubic(&img, w, h).unwrap();
    let mut out = Vec::new();
    for _ in 0..3 { out.clear(); p.process_into(&img, &mut out).unwrap(); }
    let src = vec![1.0f32; out.len()];
    let t = Instant::now();
    for _ in 0..n {
        out.clear();
        match what.as_str() {
            "process" => { p.process_into(&img, &mut out).unwrap(); }
            "patchify" => { p.process_into(&r, &mut out).unwrap(); }
            "memcpy" => { out.extend_from_slice(&src); }
            _ => panic!(),
        }
        std::hint::black_box(&out);
    }
    eprintln!("{what} {:.3} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
}

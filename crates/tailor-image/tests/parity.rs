//! Bit-for-bit parity with transformers 5.24's `Qwen2VLImageProcessorPil` and Pillow 13.
//!
//! Expected values come from `tools/reference/image_fixtures.py` (regenerate with
//! `HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/image_fixtures.py tests/fixtures/image`),
//! which stores, per case, the input file, the RGB array the processor sees, Pillow's resized
//! uint8 image and `pixel_values` (first temporal frame of each channel block; the script asserts
//! the second frame equals it).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tailor_image::{
    ImageError, ImageGrid, ImageProcessor, ProcessorConfig, RgbImage, decode, dimensions,
    resize_bicubic,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/image")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    value["cases"].as_array().unwrap().clone()
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pair(v: &Value) -> (u32, u32) {
    (v[0].as_u64().unwrap() as u32, v[1].as_u64().unwrap() as u32)
}

/// Compares two byte images and names the first differing pixel, for debugging.
fn assert_same_bytes(name: &str, what: &str, got: &[u8], want: &[u8], width: u32) {
    assert_eq!(got.len(), want.len(), "{name}: {what} length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
        let px = i / 3;
        panic!(
            "{name}: {what} differs at pixel (x {}, y {}) channel {}: got {} want {} ({differing} of {} values differ)",
            px % width as usize,
            px / width as usize,
            i % 3,
            got[i],
            want[i],
            want.len()
        );
    }
}

/// The stored half of `pixel_values` expanded to full rows (the second frame repeats the first).
fn expected_pixel_values(name: &str) -> Vec<u32> {
    let half: Vec<u32> = read(&format!("{name}.pv.bin"))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut full = Vec::with_capacity(half.len() * 2);
    for channel_block in half.chunks_exact(196) {
        full.extend_from_slice(channel_block);
        full.extend_from_slice(channel_block);
    }
    full
}

/// Runs one fixture case through decode, dimensions, resize and the processor.
fn check(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let bytes = read(case["input"].as_str().unwrap());
    let (h, w) = pair(&case["decoded_hw"]);
    let (rh, rw) = pair(&case["resized_hw"]);

    assert_eq!(dimensions(&bytes).unwrap(), (w, h), "{name}: dimensions");
    let image = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!((image.width, image.height), (w, h), "{name}: decoded size");
    if let Some(decoded) = case["decoded"].as_str() {
        assert_same_bytes(name, "decoded RGB", &image.data, &read(decoded), w);
    }

    let resized = resize_bicubic(&image, rw, rh).unwrap();
    assert_same_bytes(
        name,
        "resized",
        &resized.data,
        &read(&format!("{name}.resized.bin")),
        rw,
    );

    let config = ProcessorConfig::from_value(&case["config"]).unwrap();
    let processor = ImageProcessor::new(config).unwrap();
    let g = &case["grid_thw"];
    let grid = ImageGrid {
        t: g[0].as_u64().unwrap() as u32,
        h: g[1].as_u64().unwrap() as u32,
        w: g[2].as_u64().unwrap() as u32,
    };
    assert_eq!(processor.grid_for(h, w).unwrap(), grid, "{name}: grid_for");
    let out = processor.process(&image).unwrap();
    assert_eq!(out.grid, grid, "{name}: grid");
    let got: Vec<u32> = out.pixel_values.iter().map(|v| v.to_bits()).collect();
    let want = expected_pixel_values(name);
    assert_eq!(got.len(), want.len(), "{name}: pixel_values length");
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!(
            "{name}: pixel_values[{}][{}] = {} want {}",
            i / 1176,
            i % 1176,
            f32::from_bits(got[i]),
            f32::from_bits(want[i])
        );
    }
    let sum: f64 = out.pixel_values.iter().map(|&v| f64::from(v)).sum();
    let want_sum = case["pixel_values_sum"].as_f64().unwrap();
    assert!(
        (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
        "{name}: sum {sum} want {want_sum}"
    );
}

// Expected values: tools/reference/image_fixtures.py (transformers 5.24.0, Pillow 13.0.0).
#[test]
fn fixtures_are_bit_identical() {
    let cases = manifest();
    assert!(
        cases.len() >= 30,
        "expected the full fixture set, found {}",
        cases.len()
    );
    for case in &cases {
        check(case);
    }
}

// The test vector of docs/qwen2_5_vl_reference.md §2.5, in pure Rust. The doc prints pv[0][2]
// rounded to 7 digits (-1.602483); the f32 that transformers 5.24 returns is -1.6024829.
#[test]
fn reference_doc_test_vector() {
    let (h, w) = (50u32, 80u32);
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            for v in [
                (7 * x + 13 * y) % 256,
                (3 * x + 5 * y + 50) % 256,
                (11 * x + 2 * y + 100) % 256,
            ] {
                data.push(v as u8);
            }
        }
    }
    let image = RgbImage::new(w, h, data).unwrap();
    let resized = resize_bicubic(&image, 84, 56).unwrap();
    let row0: Vec<[u8; 3]> = (0..4).map(|x| resized.pixel(x, 0)).collect();
    assert_eq!(
        row0,
        [[0, 50, 100], [6, 53, 110], [13, 56, 121], [20, 58, 131]]
    );
    assert_eq!(resized.pixel(83, 55), [166, 20, 43]);

    let processor = ImageProcessor::new(ProcessorConfig::qwen2_5_vl()).unwrap();
    let out = processor.process(&image).unwrap();
    assert_eq!(out.grid, ImageGrid { t: 1, h: 4, w: 6 });
    let pv = &out.pixel_values;
    assert_eq!(pv.len(), 24 * 1176);
    assert_eq!(pv[..4], [-1.7922626, -1.704672, -1.6024829, -1.500294]);
    assert_eq!(pv[196..198], pv[0..2]);
    assert_eq!(pv[5 * 1176 + 392], 0.79922354);
    assert_eq!(pv[23 * 1176 + 1175], -0.86875695);
    let sum: f64 = pv.iter().map(|&v| f64::from(v)).sum();
    assert_eq!(sum, 5964.224872736493);
    // The doc's second example: 1000x3000 with max_pixels 200000.
    let small =
        ImageProcessor::new(ProcessorConfig::qwen2_5_vl().with_max_pixels(200_000)).unwrap();
    let grid = small.grid_for(1000, 3000).unwrap();
    assert_eq!(
        (grid, grid.patches()),
        (ImageGrid { t: 1, h: 18, w: 54 }, 972)
    );
}

// The reference doc's normalisation values (§2.3): v = 0, 128, 255 per channel.
#[test]
#[allow(
    clippy::excessive_precision,
    reason = "the digits as the reference doc prints them"
)]
fn reference_doc_normalisation_values() {
    let processor = ImageProcessor::new(ProcessorConfig::qwen2_5_vl()).unwrap();
    let want = [
        [-1.7922626f32, -1.7520971, -1.4802198],
        [0.076336145, 0.16889732, 0.33994877],
        [1.9303361, 2.0748837, 2.1458969],
    ];
    for (v, want) in [0u8, 128, 255].into_iter().zip(want) {
        let image = RgbImage::new(28, 28, vec![v; 28 * 28 * 3]).unwrap();
        let out = processor.process(&image).unwrap();
        for (c, want) in want.into_iter().enumerate() {
            assert_eq!(out.pixel_values[c * 2 * 196], want, "v {v} channel {c}");
        }
    }
}

#[test]
fn process_into_appends() {
    let processor = ImageProcessor::new(ProcessorConfig::qwen2_5_vl()).unwrap();
    let a = RgbImage::new(30, 40, (0..30 * 40 * 3).map(|i| (i % 251) as u8).collect()).unwrap();
    let b = RgbImage::new(60, 20, (0..60 * 20 * 3).map(|i| (i % 241) as u8).collect()).unwrap();
    let mut batch = Vec::new();
    let ga = processor.process_into(&a, &mut batch).unwrap();
    let gb = processor.process_into(&b, &mut batch).unwrap();
    let (pa, pb) = (
        processor.process(&a).unwrap(),
        processor.process(&b).unwrap(),
    );
    assert_eq!((ga, gb), (pa.grid, pb.grid));
    assert_eq!(batch.len(), (ga.patches() + gb.patches()) * 1176);
    assert_eq!(batch[..pa.pixel_values.len()], pa.pixel_values[..]);
    assert_eq!(batch[pa.pixel_values.len()..], pb.pixel_values[..]);
}

#[test]
fn errors_leave_the_batch_untouched() {
    let processor = ImageProcessor::new(ProcessorConfig::qwen2_5_vl()).unwrap();
    let mut batch = vec![1.0f32; 3];
    let bad = RgbImage {
        width: 10,
        height: 10,
        data: vec![0; 5],
    };
    assert!(processor.process_into(&bad, &mut batch).is_err());
    let extreme = RgbImage::new(1, 201, vec![0; 603]).unwrap();
    let err = processor.process_into(&extreme, &mut batch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "aspect ratio 201 of a 1x201 image is over the limit of 200"
    );
    assert_eq!(batch, [1.0; 3]);
}

#[test]
fn do_resize_off_needs_multiples_of_the_factor() {
    let config = ProcessorConfig {
        do_resize: false,
        ..ProcessorConfig::qwen2_5_vl()
    };
    let processor = ImageProcessor::new(config).unwrap();
    let ok = RgbImage::new(56, 28, vec![7; 56 * 28 * 3]).unwrap();
    assert_eq!(
        processor.process(&ok).unwrap().grid,
        ImageGrid { t: 1, h: 2, w: 4 }
    );
    let err = processor.grid_for(30, 56).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image of 56x30 is not a multiple of 28 and do_resize is off"
    );
}

#[test]
fn truncated_files_are_errors() {
    for name in [
        "jpeg_420.jpg",
        "jpeg_420_progressive.jpg",
        "palette_trns.png",
        "no_resize.png",
    ] {
        let bytes = read(name);
        assert!(decode(&bytes).is_ok(), "{name}");
        // Pillow raises "image file is truncated" for a JPEG even when only the final marker is
        // missing; a PNG cut inside IEND still opens in Pillow (and here), so PNGs are cut in
        // their image data.
        let cuts: &[usize] = if name.ends_with(".jpg") {
            &[2, 10, 200]
        } else {
            &[bytes.len() / 2]
        };
        for &cut in cuts {
            let err = decode(&bytes[..bytes.len() - cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ImageError::Truncated { .. } | ImageError::Corrupt { .. }
                ),
                "{name} -{cut}: {err}"
            );
        }
    }
    let err = decode(&read("jpeg_420.jpg")[..300]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated JPEG image: the data ends before the image does"
    );
}

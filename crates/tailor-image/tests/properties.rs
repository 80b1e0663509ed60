//! Properties over random inputs: output shapes and layout for any size, and no panic on any
//! bytes handed to the decoder.

use std::path::Path;

use proptest::prelude::*;
use tailor_image::{ImageError, ImageProcessor, ProcessorConfig, RgbImage, decode, dimensions};

fn image(width: u32, height: u32, seed: u8) -> RgbImage {
    let data = (0..width as usize * height as usize * 3)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed % 31)) as u8
        })
        .collect();
    RgbImage::new(width, height, data).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any size: either a documented error (aspect ratio over 200) or rows of 1176 values whose
    /// second temporal frame repeats the first, with the grid that `grid_for` predicts.
    #[test]
    fn output_shape_and_temporal_copy(
        width in 1u32..400,
        height in 1u32..400,
        max_pixels in 784u64..60_000,
        seed in any::<u8>(),
    ) {
        let config = ProcessorConfig::qwen2_5_vl().with_min_pixels(784).with_max_pixels(max_pixels);
        let processor = ImageProcessor::new(config).unwrap();
        let img = image(width, height, seed);
        match processor.process(&img) {
            Err(ImageError::AspectRatio { ratio, .. }) => prop_assert!(ratio > 200.0),
            Err(other) => prop_assert!(false, "unexpected error {other}"),
            Ok(out) => {
                prop_assert_eq!(out.pixel_values.len(), out.grid.patches() * 1176);
                prop_assert_eq!(out.grid.t, 1);
                prop_assert!(out.grid.h % 2 == 0 && out.grid.w % 2 == 0);
                prop_assert_eq!(processor.grid_for(height, width).unwrap(), out.grid);
                for row in out.pixel_values.chunks_exact(1176) {
                    for c in 0..3 {
                        let block = &row[c * 392..][..392];
                        prop_assert_eq!(&block[..196], &block[196..]);
                    }
                }
            }
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/image");
    [
        "jpeg_420.jpg",
        "jpeg_444_progressive.jpg",
        "jpeg_gray.jpg",
        "jpeg_cmyk.jpg",
        "palette_trns.png",
        "rgba_16bit.png",
        "gray_2bit_trns.png",
        "no_resize.png",
    ]
    .iter()
    .map(|name| std::fs::read(dir.join(name)).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Truncated and corrupted PNG / JPEG bytes give `Ok` or `Err`, never a panic (the test
    /// harness would report a panic as a failure, unwinding out of libjpeg included).
    #[test]
    fn decoding_damaged_bytes_never_panics(
        which in 0usize..8,
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..6),
    ) {
        let mut bytes = seeds()[which].clone();
        for (at, value) in flips {
            let i = ((bytes.len() - 1) as f64 * at) as usize;
            bytes[i] = value;
        }
        if cut > 0.5 {
            let keep = (bytes.len() as f64 * (cut - 0.5) * 2.0) as usize;
            bytes.truncate(keep);
        }
        let decoded = decode(&bytes);
        let _ = dimensions(&bytes);
        if let Ok(img) = decoded {
            prop_assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
        }
    }
}

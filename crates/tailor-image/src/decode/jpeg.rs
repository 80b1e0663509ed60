//! JPEG decoding with mozjpeg's libjpeg-turbo-derived decoder, bit-identical to Pillow's.
//!
//! # Why not the `image` crate's decoder
//!
//! Pillow 13 decodes JPEG with the libjpeg-turbo it bundles, with libjpeg's defaults: the
//! accurate integer IDCT (`JDCT_ISLOW`) and "fancy" (triangle-filter) chroma upsampling. Checked
//! on JPEGs written by Pillow 13.0.0 (101×67 and 256×376; 4:2:0, 4:2:2, 4:4:4, progressive 4:2:0
//! and 4:4:4, optimised Huffman tables, quality 60–100, greyscale baseline and progressive):
//!
//! - the `image` crate's decoder (zune-jpeg 0.5) differs from Pillow on 0.6–27 % of the RGB
//!   values (up to 9 levels on 4:2:0, 1 level on greyscale): its IDCT and upsampling are not
//!   libjpeg's;
//! - mozjpeg 4 (crate `mozjpeg` 0.10 over `mozjpeg-sys` 2.2, built from C with `cc`, SIMD off so
//!   no nasm is needed) gives identical bytes on every case: libjpeg-turbo's SIMD IDCT,
//!   upsampling and colour conversion (in Pillow's wheel) are written to match its C code (built
//!   here), and did on every case tried.
//!
//! The fixtures in `tests/fixtures/image/` (4:2:0, 4:2:2, progressive 4:4:4 and 4:2:0, greyscale,
//! CMYK) keep checking it, on the decoded RGB bytes themselves.
//!
//! # Errors and unwinding
//!
//! libjpeg reports fatal errors through `error_exit`, which must not return. mozjpeg-sys is
//! built with `-fexceptions` (feature `unwinding`) so a Rust callback may unwind through the C
//! frames; we unwind with [`std::panic::resume_unwind`] (which skips the panic hook, so nothing is
//! printed) and catch it at the top of [`decode`]. A premature end of data is only a *warning*
//! in libjpeg (it fakes an EOI and fills the rest grey), but Pillow raises "image file is
//! truncated" there, even when only the final EOI marker is missing; so that warning is turned
//! into [`ImageError::Truncated`]. Other warnings (extraneous bytes, ...) are ignored, as Pillow
//! ignores them. Unwinding needs `panic = "unwind"`, Rust's default, which the workspace keeps.

use std::ffi::CStr;
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys::{JWRN_JPEG_EOF, jpeg_common_struct, jpeg_error_mgr, jpeg_std_error};

use super::{RgbImage, check_size, pillow};
use crate::error::{ImageError, Result};

const FORMAT: &str = "JPEG";

/// What the error manager unwinds with.
enum Failure {
    Truncated,
    Corrupt(String),
}

/// Decodes a JPEG as `convert_to_rgb(Image.open(...))` sees it.
pub(crate) fn decode(bytes: &[u8]) -> Result<RgbImage> {
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes))) {
        Ok(result) => result,
        Err(payload) => Err(match payload.downcast::<Failure>() {
            Ok(failure) => match *failure {
                Failure::Truncated => ImageError::Truncated { format: FORMAT },
                Failure::Corrupt(detail) => ImageError::Corrupt {
                    format: FORMAT,
                    detail,
                },
            },
            // A panic from the wrapper crate itself (it asserts on a few states): still bad
            // input from our point of view, never a crash.
            Err(other) => ImageError::Corrupt {
                format: FORMAT,
                detail: panic_text(&other),
            },
        }),
    }
}

fn decode_inner(bytes: &[u8]) -> Result<RgbImage> {
    let decompress = Decompress::with_err(error_manager())
        .from_mem(bytes)
        .map_err(io_error)?;
    let (width, height) = (decompress.width(), decompress.height());
    let (w, h) = (
        u32::try_from(width).map_err(|_| corrupt("width out of range"))?,
        u32::try_from(height).map_err(|_| corrupt("height out of range"))?,
    );
    check_size(w, h)?;
    let pixels = width * height;
    // Pillow's mode comes from the frame header's component count ("layers").
    let data = match decompress.components().len() {
        1 => {
            let mut started = decompress.grayscale().map_err(io_error)?;
            let grey: Vec<u8> = started.read_scanlines().map_err(io_error)?;
            started.finish().map_err(io_error)?;
            check_len(grey.len(), pixels)?;
            grey.iter().flat_map(|&v| [v, v, v]).collect()
        }
        3 => {
            let mut started = decompress.rgb().map_err(io_error)?;
            let rgb: Vec<u8> = started.read_scanlines().map_err(io_error)?;
            started.finish().map_err(io_error)?;
            check_len(rgb.len(), pixels * 3)?;
            rgb
        }
        4 => {
            let mut started = decompress
                .to_colorspace(ColorSpace::JCS_CMYK)
                .map_err(io_error)?;
            let cmyk: Vec<u8> = started.read_scanlines().map_err(io_error)?;
            started.finish().map_err(io_error)?;
            check_len(cmyk.len(), pixels * 4)?;
            // Pillow unpacks CMYK JPEGs with raw mode "CMYK;I" (inverted, Adobe's polarity).
            cmyk.chunks_exact(4)
                .flat_map(|p| pillow::cmyk_to_rgb([255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]]))
                .collect()
        }
        n => {
            return Err(ImageError::UnsupportedFormat {
                format: FORMAT,
                detail: format!("{n} components (Pillow handles 1, 3 or 4)"),
            });
        }
    };
    RgbImage::new(w, h, data)
}

fn check_len(got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(ImageError::Truncated { format: FORMAT })
    }
}

fn corrupt(detail: &str) -> ImageError {
    ImageError::Corrupt {
        format: FORMAT,
        detail: detail.into(),
    }
}

fn io_error(e: std::io::Error) -> ImageError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ImageError::Truncated { format: FORMAT },
        _ => ImageError::Corrupt {
            format: FORMAT,
            detail: e.to_string(),
        },
    }
}

fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "decoder failure".into()
    }
}

/// libjpeg's standard error manager with our two callbacks.
fn error_manager() -> jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a plain C struct for which all-zero is a valid (empty) value,
    // and `jpeg_std_error` only fills in its fields.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// The message template of the current error code, without its printf arguments.
fn message_template(cinfo: &jpeg_common_struct) -> String {
    // SAFETY: `cinfo.err` points at the error manager set up by `error_manager`, alive for the
    // whole decompression; the message table is libjpeg's static array of C strings, indexed
    // within `0..=last_jpeg_message`.
    unsafe {
        let Some(err) = cinfo.err.as_ref() else {
            return "libjpeg error".into();
        };
        let code = err.msg_code;
        if code > 0 && code <= err.last_jpeg_message && !err.jpeg_message_table.is_null() {
            let text = *err.jpeg_message_table.offset(code as isize);
            if !text.is_null() {
                return CStr::from_ptr(text).to_string_lossy().into_owned();
            }
        }
        format!("libjpeg error {code}")
    }
}

unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let message = message_template(cinfo);
    resume_unwind(Box::new(Failure::Corrupt(message)));
}

unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // Level -1 is a warning; 0 and up are trace messages.
    // SAFETY: as in `message_template`, `cinfo.err` is our live error manager.
    let code = unsafe { cinfo.err.as_ref() }.map(|e| e.msg_code);
    if level < 0 && code == Some(JWRN_JPEG_EOF as c_int) {
        resume_unwind(Box::new(Failure::Truncated));
    }
}

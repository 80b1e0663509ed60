//! 3-D M-RoPE position ids, as transformers 5.24's `Qwen2_5_VLModel.get_rope_index` computes them.
//!
//! Per sequence (padding removed), tokens are grouped into runs of one modality: text, image
//! placeholder or video placeholder. A text run of length `n` takes positions `p..p+n` on all three
//! rows. A vision run takes one column per merged patch, `(p + T(a), p + b, p + c)` over the grid
//! `(a, b, c)` of `t × h/m × w/m`, and then advances `p` by `max(h, w) / m` (the temporal extent is
//! not counted; 5.24 behaviour, identical to 4.x for still images). The sequence's `rope_delta` is
//! `max position + 1 − length`, which places generated tokens after the prompt.

use std::path::Path;

use serde_json::Value as Json;
use tailor_core::ImageGrid;

use crate::error::{Result, TextError};
use crate::tokenizer::read_json;

/// The model settings that positions depend on, read from the model's `config.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// Id of the image placeholder token (`image_token_id`).
    pub image_token_id: u32,
    /// Id of the video placeholder token (`video_token_id`).
    pub video_token_id: u32,
    /// Patches merged per side into one LLM token (`vision_config.spatial_merge_size`, 2).
    pub spatial_merge_size: u32,
    /// Temporal positions per second of video (`vision_config.tokens_per_second`).
    pub tokens_per_second: u32,
}

impl RopeConfig {
    /// Reads the ids and sizes from a `config.json`, flat (hub layout) or nested (what
    /// transformers 5 writes). Missing keys are an error: nothing is defaulted.
    pub fn from_config_json(path: &Path) -> Result<Self> {
        let config = read_json(path)?;
        let missing = |key: &str| TextError::MissingKey {
            path: path.to_path_buf(),
            key: key.to_owned(),
        };
        // Token ids sit at the root in both layouts; old flat files may also repeat them in
        // text_config, which is ignored.
        let root_u32 = |key: &str| -> Result<u32> {
            config
                .get(key)
                .and_then(Json::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| missing(key))
        };
        let vision = config
            .get("vision_config")
            .ok_or_else(|| missing("vision_config"))?;
        let vision_u32 = |key: &str| -> Result<u32> {
            vision
                .get(key)
                .and_then(Json::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| missing(&format!("vision_config.{key}")))
        };
        Ok(Self {
            image_token_id: root_u32("image_token_id")?,
            video_token_id: root_u32("video_token_id")?,
            spatial_merge_size: vision_u32("spatial_merge_size")?,
            tokens_per_second: vision_u32("tokens_per_second")?,
        })
    }
}

/// A video's grid and the seconds each temporal grid step spans (`second_per_grid_ts`; the
/// processor sets `temporal_patch_size / fps`, 1.0 at the default 2 fps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoGrid {
    /// Patch grid of the video.
    pub grid: ImageGrid,
    /// Seconds per temporal grid step.
    pub second_per_grid: f32,
}

/// The M-RoPE positions of one unpadded sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MropePositions {
    /// Temporal, height and width rows, each as long as the sequence.
    pub rows: [Vec<i64>; 3],
    /// `max position + 1 − sequence length`.
    pub rope_delta: i64,
}

/// Computes the 3-D positions of one sequence (no padding) whose image and video placeholder
/// runs consume `images` and `videos` in order. Each run's length must equal its grid's
/// `t · (h/m) · (w/m)` and every grid must be consumed.
pub fn rope_index(
    input_ids: &[u32],
    images: &[ImageGrid],
    videos: &[VideoGrid],
    cfg: &RopeConfig,
) -> Result<MropePositions> {
    let m = cfg.spatial_merge_size.max(1);
    let modality = |id: u32| {
        if id == cfg.image_token_id {
            Modality::Image
        } else if id == cfg.video_token_id {
            Modality::Video
        } else {
            Modality::Text
        }
    };
    let mut rows: [Vec<i64>; 3] = std::array::from_fn(|_| Vec::with_capacity(input_ids.len()));
    let mut images_iter = images.iter();
    let mut videos_iter = videos.iter();
    let mut current: i64 = 0;
    let mut start = 0;
    while start < input_ids.len() {
        let kind = modality(input_ids[start]);
        let run = input_ids[start..]
            .iter()
            .take_while(|&&id| modality(id) == kind)
            .count();
        match kind {
            Modality::Text => {
                for row in &mut rows {
                    row.extend(current..current + run as i64);
                }
                current += run as i64;
            }
            Modality::Image | Modality::Video => {
                let (grid, interval) = match kind {
                    Modality::Image => (images_iter.next().copied(), TimeInterval::Unit),
                    _ => match videos_iter.next() {
                        Some(v) => (
                            Some(v.grid),
                            TimeInterval::Scaled(cfg.tokens_per_second as f32 * v.second_per_grid),
                        ),
                        None => (None, TimeInterval::Unit),
                    },
                };
                let name = kind.name();
                let grid = grid.ok_or_else(|| TextError::VisionTokenMismatch {
                    kind: name,
                    detail: format!(
                        "more {name} placeholder runs than the {} grids given",
                        kind.count(images, videos)
                    ),
                })?;
                let (lt, lh, lw) = (grid.t as i64, (grid.h / m) as i64, (grid.w / m) as i64);
                if (lt * lh * lw) as usize != run {
                    return Err(TextError::VisionTokenMismatch {
                        kind: name,
                        detail: format!(
                            "a run of {run} tokens at position {start} but grid {}x{}x{} needs {}",
                            grid.t,
                            grid.h,
                            grid.w,
                            lt * lh * lw
                        ),
                    });
                }
                for a in 0..lt {
                    let temporal = interval.apply(a) + current;
                    for b in 0..lh {
                        for c in 0..lw {
                            rows[0].push(temporal);
                            rows[1].push(b + current);
                            rows[2].push(c + current);
                        }
                    }
                }
                current += i64::from(grid.h.max(grid.w) / m);
            }
        }
        start += run;
    }
    let unused_images = images_iter.count();
    let unused_videos = videos_iter.count();
    if unused_images > 0 || unused_videos > 0 {
        let (kind, unused, total) = if unused_images > 0 {
            ("image", unused_images, images.len())
        } else {
            ("video", unused_videos, videos.len())
        };
        return Err(TextError::VisionTokenMismatch {
            kind,
            detail: format!("{} placeholder runs for {total} grids", total - unused),
        });
    }
    let max = rows.iter().flatten().copied().max();
    let rope_delta = max.map_or(0, |max| max + 1 - input_ids.len() as i64);
    Ok(MropePositions { rows, rope_delta })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Modality {
    Text,
    Image,
    Video,
}

impl Modality {
    fn name(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Image => "image",
            Modality::Video => "video",
        }
    }

    fn count(self, images: &[ImageGrid], videos: &[VideoGrid]) -> usize {
        match self {
            Modality::Video => videos.len(),
            _ => images.len(),
        }
    }
}

/// How temporal grid steps become positions.
#[derive(Clone, Copy)]
enum TimeInterval {
    /// Images: step `a` is position `a`.
    Unit,
    /// Videos: `(a · tokens_per_second · second_per_grid)` truncated, computed in f32 as torch
    /// does (an int64 `arange` times a float32 scalar tensor, then `.long()`).
    Scaled(f32),
}

impl TimeInterval {
    fn apply(self, a: i64) -> i64 {
        match self {
            TimeInterval::Unit => a,
            TimeInterval::Scaled(f) => (a as f32 * f) as i64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: RopeConfig = RopeConfig {
        image_token_id: 9,
        video_token_id: 8,
        spatial_merge_size: 2,
        tokens_per_second: 2,
    };

    #[test]
    fn video_temporal_positions_are_scaled() {
        // Grid 2x2x2 → 2 temporal steps of 1 merged token each; interval 2 · 1.5 = 3.0.
        let ids = [1, 8, 8, 1];
        let v = VideoGrid {
            grid: ImageGrid { t: 2, h: 2, w: 2 },
            second_per_grid: 1.5,
        };
        let p = rope_index(&ids, &[], &[v], &CFG).unwrap();
        // T = [0, 1+0, 1+3, 2]; H = W = [0, 1, 1, 2]; text resumes at 1 + max(2, 2)/2.
        assert_eq!(p.rows[0], vec![0, 1, 4, 2]);
        assert_eq!(p.rows[1], vec![0, 1, 1, 2]);
        assert_eq!(p.rows[2], vec![0, 1, 1, 2]);
        assert_eq!(p.rope_delta, 4 + 1 - 4);
    }

    #[test]
    fn run_length_must_match_grid() {
        let err = rope_index(&[9, 9, 9], &[ImageGrid { t: 1, h: 2, w: 2 }], &[], &CFG)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a run of 3 tokens"), "{err}");
        let err = rope_index(&[1, 2], &[ImageGrid { t: 1, h: 2, w: 2 }], &[], &CFG)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 placeholder runs for 1 grids"), "{err}");
    }

    #[test]
    fn config_from_flat_hub_layout_and_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        // The hub's flat layout: ids at the root, vision settings nested.
        std::fs::write(
            &path,
            r#"{"image_token_id": 151655, "video_token_id": 151656, "hidden_size": 2048,
                "vision_config": {"spatial_merge_size": 2, "tokens_per_second": 2}}"#,
        )
        .unwrap();
        let cfg = RopeConfig::from_config_json(&path).unwrap();
        assert_eq!(
            cfg,
            RopeConfig {
                image_token_id: 151655,
                video_token_id: 151656,
                spatial_merge_size: 2,
                tokens_per_second: 2
            }
        );
        std::fs::write(
            &path,
            r#"{"image_token_id": 1, "video_token_id": 2, "vision_config": {"spatial_merge_size": 2}}"#,
        )
        .unwrap();
        let err = RopeConfig::from_config_json(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("missing or invalid key `vision_config.tokens_per_second`"),
            "{err}"
        );
    }

    #[test]
    fn empty_sequence_has_no_positions() {
        let p = rope_index(&[], &[], &[], &CFG).unwrap();
        assert!(p.rows.iter().all(Vec::is_empty));
        assert_eq!(p.rope_delta, 0);
    }
}

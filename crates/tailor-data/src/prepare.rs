//! From catalog rows to model inputs: chat messages, image grids and pixels, token ids and labels,
//! and collated batches — the processor of a model folder (or tailor's embedded tiny one) applied
//! to a [`ChatFormat`].

use std::path::{Path, PathBuf};

use tailor_core::{Batch, ImageGrid, LabelMask};
use tailor_image::{ImageProcessor, ProcessorConfig};
use tailor_text::{
    ChatTemplate, CollateConfig, CollateReport, EncodedSample, Message, Part, RopeConfig,
    TextProcessor, Tokenizer,
};

use crate::catalog::Row;
use crate::chat::{ChatFormat, ChatTexts};
use crate::error::{DataError, Result};

/// Files of tailor's embedded tiny model (small vocabulary, Qwen2.5-VL template and ids of its
/// own): tokenizer and template for commands run without `--model`.
mod embedded {
    pub const TOKENIZER: &str = include_str!("../../../tests/fixtures/tiny-model/tokenizer.json");
    pub const TOKENIZER_CONFIG: &str =
        include_str!("../../../tests/fixtures/tiny-model/tokenizer_config.json");
    pub const CHAT_TEMPLATE: &str =
        include_str!("../../../tests/fixtures/tiny-model/chat_template.json");
    pub const CONFIG: &str = include_str!("../../../tests/fixtures/tiny-model/config.json");
}

/// Where the processing settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model folder.
    Dir(PathBuf),
    /// tailor's embedded tiny tokenizer with the Qwen2.5-VL-3B image settings.
    Embedded,
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Dir(p) => write!(f, "{}", p.display()),
            ModelSource::Embedded => f.write_str(
                "embedded tiny tokenizer + Qwen2.5-VL-3B image settings (text counts indicative)",
            ),
        }
    }
}

/// A model's processor: tokenizer + chat template, image processor, and the ids positions need.
#[derive(Debug)]
pub struct Processor {
    /// Where it was loaded from.
    pub source: ModelSource,
    /// Tokenizer and chat template.
    pub text: TextProcessor,
    /// Image processor.
    pub image: ImageProcessor,
    /// Ids and sizes for M-RoPE positions.
    pub rope: RopeConfig,
}

fn model_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::format(path, e)
}

impl Processor {
    /// Loads `tokenizer.json`, `tokenizer_config.json`, the chat template,
    /// `preprocessor_config.json` and `config.json` from a model folder; `min_pixels` /
    /// `max_pixels` override the preprocessor's.
    pub fn from_dir(dir: &Path, min_pixels: Option<u64>, max_pixels: Option<u64>) -> Result<Self> {
        let text = TextProcessor::from_dir(dir).map_err(|e| model_err(dir, e))?;
        let pre = dir.join("preprocessor_config.json");
        let json = std::fs::read_to_string(&pre).map_err(|e| DataError::io(&pre, e))?;
        let cfg = ProcessorConfig::from_json(&json).map_err(|e| model_err(&pre, e))?;
        let config = dir.join("config.json");
        let rope = RopeConfig::from_config_json(&config).map_err(|e| model_err(&config, e))?;
        Self::assemble(
            ModelSource::Dir(dir.to_path_buf()),
            text,
            cfg,
            rope,
            min_pixels,
            max_pixels,
        )
    }

    /// tailor's embedded tiny tokenizer and template with the Qwen2.5-VL-3B image settings: image
    /// token counts are those of the real model, text counts are only indicative.
    pub fn embedded(min_pixels: Option<u64>, max_pixels: Option<u64>) -> Result<Self> {
        let origin = Path::new("<embedded tiny model>");
        let inner = tokenizers::Tokenizer::from_bytes(embedded::TOKENIZER.as_bytes())
            .map_err(|e| model_err(origin, e))?;
        let config: serde_json::Value =
            serde_json::from_str(embedded::TOKENIZER_CONFIG).map_err(|e| model_err(origin, e))?;
        let tokenizer =
            Tokenizer::from_parts(inner, &config, origin).map_err(|e| model_err(origin, e))?;
        let template: serde_json::Value =
            serde_json::from_str(embedded::CHAT_TEMPLATE).map_err(|e| model_err(origin, e))?;
        let template = template
            .get("chat_template")
            .and_then(|t| t.as_str())
            .ok_or_else(|| model_err(origin, "chat_template.json has no chat_template"))?;
        let template = ChatTemplate::new(template).map_err(|e| model_err(origin, e))?;
        let rope = rope_from_json(embedded::CONFIG).map_err(|e| model_err(origin, e))?;
        Self::assemble(
            ModelSource::Embedded,
            TextProcessor::new(tokenizer, template),
            ProcessorConfig::qwen2_5_vl(),
            rope,
            min_pixels,
            max_pixels,
        )
    }

    /// [`Processor::from_dir`] when a folder is given, else [`Processor::embedded`].
    pub fn load(
        dir: Option<&Path>,
        min_pixels: Option<u64>,
        max_pixels: Option<u64>,
    ) -> Result<Self> {
        match dir {
            Some(d) => Self::from_dir(d, min_pixels, max_pixels),
            None => Self::embedded(min_pixels, max_pixels),
        }
    }

    fn assemble(
        source: ModelSource,
        text: TextProcessor,
        mut cfg: ProcessorConfig,
        rope: RopeConfig,
        min_pixels: Option<u64>,
        max_pixels: Option<u64>,
    ) -> Result<Self> {
        if let Some(v) = min_pixels {
            cfg = cfg.with_min_pixels(v);
        }
        if let Some(v) = max_pixels {
            cfg = cfg.with_max_pixels(v);
        }
        let image = ImageProcessor::new(cfg).map_err(|e| DataError::Invalid(e.to_string()))?;
        if image.config().merge_size != rope.spatial_merge_size {
            return Err(DataError::Invalid(format!(
                "preprocessor merge_size {} differs from the model's spatial_merge_size {}",
                image.config().merge_size,
                rope.spatial_merge_size
            )));
        }
        Ok(Processor {
            source,
            text,
            image,
            rope,
        })
    }

    /// The chat of one row: `[system], user: [image, prompt], assistant: answer`.
    pub fn messages(texts: &ChatTexts, with_answer: bool) -> Vec<Message> {
        let mut m = Vec::with_capacity(3);
        if let Some(s) = &texts.system {
            m.push(Message::text("system", s));
        }
        m.push(Message::parts(
            "user",
            vec![Part::Image, Part::Text(texts.prompt.clone())],
        ));
        if with_answer {
            m.push(Message::text("assistant", &texts.answer));
        }
        m
    }

    /// The image grid of a row from its header alone (no pixel decoding).
    pub fn grid_of(&self, row: &Row, image_column: &str) -> Result<(u32, u32, ImageGrid)> {
        let bytes = row
            .image(image_column)?
            .bytes()
            .map_err(|e| row.error(image_column, format!("cannot read image: {e}")))?;
        let (w, h) = tailor_image::dimensions(&bytes).map_err(|e| row.error(image_column, e))?;
        let grid = self
            .image
            .grid_for(h, w)
            .map_err(|e| row.error(image_column, e))?;
        Ok((w, h, grid))
    }

    /// Decodes and processes a row's image, appending its patches to `pixels`.
    pub fn pixels_of(
        &self,
        row: &Row,
        image_column: &str,
        pixels: &mut Vec<f32>,
    ) -> Result<ImageGrid> {
        let bytes = row
            .image(image_column)?
            .bytes()
            .map_err(|e| row.error(image_column, format!("cannot read image: {e}")))?;
        let img = tailor_image::decode(&bytes).map_err(|e| row.error(image_column, e))?;
        self.image
            .process_into(&img, pixels)
            .map_err(|e| row.error(image_column, e))
    }

    /// Token ids and labels of a row's training chat, given its image grid.
    pub fn encode(
        &self,
        row: &Row,
        format: &ChatFormat,
        grid: ImageGrid,
        mask: LabelMask,
    ) -> Result<EncodedSample> {
        let texts = format.sample(row)?;
        let messages = Self::messages(&texts, true);
        self.text
            .encode_chat(&messages, &[grid], self.image.config().merge_size, mask)
            .map_err(|e| row.error("chat", e))
    }

    /// A model-ready batch of rows: images decoded and processed, chats encoded, collated with
    /// right padding, labels and M-RoPE positions. Rows over `max_length` are left out and listed
    /// in the report (its `kept` indices refer to `rows`).
    pub fn batch(
        &self,
        rows: &[Row],
        format: &ChatFormat,
        image_column: &str,
        mask: LabelMask,
        max_length: Option<usize>,
    ) -> Result<(Batch, CollateReport)> {
        let mut encoded = Vec::with_capacity(rows.len());
        let mut grids = Vec::with_capacity(rows.len());
        let mut pixels_per_row = Vec::with_capacity(rows.len());
        for row in rows {
            let mut px = Vec::new();
            let grid = self.pixels_of(row, image_column, &mut px)?;
            encoded.push(self.encode(row, format, grid, mask)?);
            grids.push(vec![grid]);
            pixels_per_row.push(px);
        }
        let cfg = CollateConfig {
            pad_id: self.text.tokenizer().special().pad,
            max_length,
            rope: self.rope,
        };
        let (tokens, report) = tailor_text::collate(&encoded, &grids, &cfg)
            .map_err(|e| DataError::Invalid(format!("collation: {e}")))?;
        let mut pixel_values = Vec::new();
        let mut image_grids = Vec::new();
        for &k in &report.kept {
            pixel_values.extend_from_slice(&pixels_per_row[k]);
            image_grids.extend_from_slice(&grids[k]);
        }
        Ok((
            Batch {
                tokens,
                pixel_values,
                patch_dim: self.image.row_len(),
                image_grids,
            },
            report,
        ))
    }
}

/// One generation prompt: the ids of a chat rendered with the generation prompt, and its image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Token ids, image placeholders expanded.
    pub ids: Vec<u32>,
    /// The image's patch rows.
    pub pixel_values: Vec<f32>,
    /// The image's grid.
    pub grid: ImageGrid,
}

impl Processor {
    /// The generation prompt of a row's chat (system and user turn, no answer) with its image
    /// decoded and processed.
    pub fn prompt(&self, row: &Row, format: &ChatFormat, image_column: &str) -> Result<Prompt> {
        let mut pixel_values = Vec::new();
        let grid = self.pixels_of(row, image_column, &mut pixel_values)?;
        let ids = self.prompt_ids(&format.sample_prompt(row)?, grid)?;
        Ok(Prompt {
            ids,
            pixel_values,
            grid,
        })
    }

    /// Prompt ids for given chat texts and image grid.
    pub fn prompt_ids(&self, texts: &ChatTexts, grid: ImageGrid) -> Result<Vec<u32>> {
        let messages = Self::messages(texts, false);
        self.text
            .encode_prompt(&messages, &[grid], self.image.config().merge_size)
            .map_err(|e| DataError::Invalid(format!("rendering the prompt: {e}")))
    }

    /// Batches prompts for generation with LEFT padding (so every row's next token sits at the
    /// last column): ids, attention mask, M-RoPE positions over each row's real tokens (0 on
    /// padding, as transformers 5.24), and per-row rope deltas as `collate` defines them (max
    /// position + 1 − the row's real length), so the k-th generated token of a row with n real
    /// tokens sits at `n + k + delta` on all three rows, whatever the padding.
    pub fn prompt_batch(&self, prompts: &[Prompt]) -> Result<Batch> {
        let b = prompts.len();
        let l = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        let pad = self.text.tokenizer().special().pad;
        let mut input_ids = vec![pad; b * l];
        let mut attention_mask = vec![0u8; b * l];
        let mut position_ids = vec![0i64; 3 * b * l];
        let mut rope_deltas = Vec::with_capacity(b);
        let mut pixel_values = Vec::new();
        let mut image_grids = Vec::with_capacity(b);
        for (r, p) in prompts.iter().enumerate() {
            let offset = l - p.ids.len();
            let pos = tailor_text::rope_index(&p.ids, &[p.grid], &[], &self.rope)
                .map_err(|e| DataError::Invalid(format!("prompt positions: {e}")))?;
            for (k, &id) in p.ids.iter().enumerate() {
                input_ids[r * l + offset + k] = id;
                attention_mask[r * l + offset + k] = 1;
                for (axis, row) in pos.rows.iter().enumerate() {
                    position_ids[(axis * b + r) * l + offset + k] = row[k];
                }
            }
            rope_deltas.push(pos.rope_delta);
            pixel_values.extend_from_slice(&p.pixel_values);
            image_grids.push(p.grid);
        }
        Ok(Batch {
            tokens: tailor_core::TokenBatch {
                batch_size: b,
                seq_len: l,
                input_ids,
                attention_mask,
                labels: vec![tailor_core::IGNORE_INDEX; b * l],
                position_ids,
                rope_deltas,
            },
            pixel_values,
            patch_dim: self.image.row_len(),
            image_grids,
        })
    }
}

/// The M-RoPE ids of a `config.json` text (the embedded model's); mirrors
/// [`RopeConfig::from_config_json`] for text that is not a file.
fn rope_from_json(text: &str) -> std::result::Result<RopeConfig, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let get = |obj: &serde_json::Value, key: &str| {
        obj.get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| format!("config.json lacks {key}"))
    };
    let vision = v
        .get("vision_config")
        .ok_or("config.json lacks vision_config")?;
    Ok(RopeConfig {
        image_token_id: get(&v, "image_token_id")?,
        video_token_id: get(&v, "video_token_id")?,
        spatial_merge_size: get(vision, "spatial_merge_size")?,
        tokens_per_second: get(vision, "tokens_per_second")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn tiny_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-model")
    }

    #[test]
    fn embedded_and_folder_processors_agree_on_text() {
        let a = Processor::embedded(None, None).unwrap();
        let b = Processor::from_dir(&tiny_dir(), None, Some(12_845_056)).unwrap();
        assert_eq!(a.rope, b.rope);
        let cat = Catalog::sample();
        let row = cat.rows(true).unwrap().next().unwrap().unwrap();
        let fmt = ChatFormat::recipe();
        let (_, _, grid) = a.grid_of(&row, "image").unwrap();
        let ea = a.encode(&row, &fmt, grid, LabelMask::Assistant).unwrap();
        let eb = b.encode(&row, &fmt, grid, LabelMask::Assistant).unwrap();
        assert_eq!(ea, eb);
    }

    #[test]
    fn left_padded_prompts_keep_each_rows_positions() {
        let p = Processor::embedded(None, Some(56 * 56 * 4)).unwrap();
        let cat = Catalog::sample();
        let rows: Vec<Row> = cat
            .rows(true)
            .unwrap()
            .take(2)
            .map(|r| r.unwrap())
            .collect();
        let mut no_system = ChatFormat::recipe();
        no_system.system = None;
        let short = p.prompt(&rows[0], &no_system, "image").unwrap();
        let long = p.prompt(&rows[1], &ChatFormat::recipe(), "image").unwrap();
        assert!(short.ids.len() < long.ids.len());
        let alone = p.prompt_batch(std::slice::from_ref(&long)).unwrap();
        let both = p.prompt_batch(&[short.clone(), long.clone()]).unwrap();
        let t = &both.tokens;
        assert_eq!(t.seq_len, long.ids.len().max(short.ids.len()));
        let l = t.seq_len;
        let pad = l - short.ids.len();
        assert!(t.attention_mask[..pad].iter().all(|&m| m == 0));
        assert_eq!(&t.input_ids[pad..l], &short.ids[..]);
        // The unpadded row's positions and the next-token position agree with a batch of one.
        for axis in 0..3 {
            let row = &t.position_ids[(axis * 2 + 1) * l..(axis * 2 + 2) * l];
            let one = &alone.tokens.position_ids
                [axis * alone.tokens.seq_len..(axis + 1) * alone.tokens.seq_len];
            assert_eq!(&row[l - one.len()..], one);
        }
        let real = |t: &tailor_core::TokenBatch, r: usize| {
            t.attention_mask[r * t.seq_len..(r + 1) * t.seq_len]
                .iter()
                .map(|&m| i64::from(m))
                .sum::<i64>()
        };
        let next = |t: &tailor_core::TokenBatch, r: usize| real(t, r) + t.rope_deltas[r];
        assert_eq!(next(t, 1), next(&alone.tokens, 0));
        let max_short = (0..3)
            .flat_map(|a| t.position_ids[a * 2 * l..(a * 2 + 1) * l].iter().copied())
            .max()
            .unwrap();
        assert_eq!(next(t, 0), max_short + 1);
        assert_eq!(both.image_grids, [short.grid, long.grid]);
    }

    #[test]
    fn batch_of_sample_rows_is_consistent() {
        let p = Processor::embedded(None, None).unwrap();
        let cat = Catalog::sample();
        let rows: Vec<Row> = cat
            .rows(true)
            .unwrap()
            .take(3)
            .map(|r| r.unwrap())
            .collect();
        let (batch, report) = p
            .batch(
                &rows,
                &ChatFormat::recipe(),
                "image",
                LabelMask::Assistant,
                None,
            )
            .unwrap();
        assert_eq!(report.kept, [0, 1, 2]);
        assert_eq!(batch.tokens.batch_size, 3);
        let patches: usize = batch.image_grids.iter().map(ImageGrid::patches).sum();
        assert_eq!(batch.pixel_values.len(), patches * batch.patch_dim);
        let image_pad = p.text.tokenizer().special().image_pad;
        let pads = batch
            .tokens
            .input_ids
            .iter()
            .filter(|&&t| t == image_pad)
            .count();
        let merge = p.image.config().merge_size;
        assert_eq!(
            pads,
            batch
                .image_grids
                .iter()
                .map(|g| g.llm_tokens(merge))
                .sum::<usize>()
        );
        // Some labels exist and none sits on an image or pad token.
        let labelled = batch.tokens.labels.iter().filter(|&&l| l >= 0).count();
        assert!(labelled > 0);
    }
}

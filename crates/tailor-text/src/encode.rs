//! Chat → token ids and labels: image-pad expansion, tokenization and the label mask.

use std::ops::Range;
use std::path::Path;

use tailor_core::{IGNORE_INDEX, ImageGrid, LabelMask};

use crate::error::{Result, TextError};
use crate::template::{ChatTemplate, Message};
use crate::tokenizer::{EncodedText, Tokenizer};

/// The role whose turns are trained under [`LabelMask::Assistant`] (the Hugging Face chat schema
/// name, not a template detail).
const ASSISTANT_ROLE: &str = "assistant";

/// One encoded training sample: ids and unshifted labels of equal length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSample {
    /// Token ids, image placeholders already expanded.
    pub input_ids: Vec<u32>,
    /// Target per position: the id itself, or [`IGNORE_INDEX`] where no loss is taken.
    pub labels: Vec<i64>,
}

/// Tokenizer plus chat template: everything needed to turn a chat into ids.
#[derive(Debug)]
pub struct TextProcessor {
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

impl TextProcessor {
    /// Loads the tokenizer and the processor chat template of a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Ok(Self::new(
            Tokenizer::from_dir(dir)?,
            ChatTemplate::from_dir(dir)?,
        ))
    }

    /// Combines an already loaded tokenizer and template.
    pub fn new(tokenizer: Tokenizer, template: ChatTemplate) -> Self {
        Self {
            tokenizer,
            template,
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Replaces each image placeholder of `text`, left to right, by `grid.llm_tokens(merge_size)`
    /// copies, consuming `grids` in order (what `Qwen2_5_VLProcessor.__call__` does before
    /// tokenizing). The number of placeholders must equal the number of grids.
    pub fn expand_image_pads(
        &self,
        text: &str,
        grids: &[ImageGrid],
        merge_size: u32,
    ) -> Result<String> {
        Ok(expand(
            text,
            &self.tokenizer.special_strings().image_pad,
            grids,
            merge_size,
        )?
        .text)
    }

    /// Renders a training conversation (no generation prompt), expands image placeholders,
    /// tokenizes, and builds labels under `label_mask`. This is the one place where label rules
    /// live:
    ///
    /// - pad and image-pad positions are never labels (under either mask);
    /// - [`LabelMask::Recipe`] labels everything else, like TRL's `sft_vlm.py` collator;
    /// - [`LabelMask::Assistant`] labels only the tokens of each assistant answer up to and
    ///   including the end-of-sequence token that closes it (`<|im_end|>`); whatever the template
    ///   writes after that token (`\n`) is never generated, so it is not trained either. A token
    ///   that straddles the start of an answer (only possible when the answer begins with
    ///   whitespace that BPE merges with the header's newline) counts as part of the answer.
    pub fn encode_chat(
        &self,
        messages: &[Message],
        grids: &[ImageGrid],
        merge_size: u32,
        label_mask: LabelMask,
    ) -> Result<EncodedSample> {
        let text = self.template.render(messages, false)?;
        let expanded = expand(
            &text,
            &self.tokenizer.special_strings().image_pad,
            grids,
            merge_size,
        )?;
        let EncodedText {
            ids: input_ids,
            offsets,
        } = self.tokenizer.encode_with_offsets(&expanded.text)?;
        let special = self.tokenizer.special();
        let never_label = |id: u32| id == special.pad || id == special.image_pad;
        let labels = match label_mask {
            LabelMask::Recipe => input_ids
                .iter()
                .map(|&id| label_or_ignore(id, !never_label(id)))
                .collect(),
            LabelMask::Assistant => {
                let spans: Vec<Range<usize>> = self
                    .assistant_spans(messages, &text)?
                    .into_iter()
                    .map(|s| expanded.map(s.start)..expanded.map(s.end))
                    .collect();
                input_ids
                    .iter()
                    .zip(&offsets)
                    .map(|(&id, &(start, end))| {
                        let in_answer = spans.iter().any(|s| overlaps(start, end, s));
                        label_or_ignore(id, in_answer && !never_label(id))
                    })
                    .collect()
            }
        };
        Ok(EncodedSample { input_ids, labels })
    }

    /// Renders a conversation for inference (with the generation prompt), expands image
    /// placeholders and tokenizes.
    pub fn encode_prompt(
        &self,
        messages: &[Message],
        grids: &[ImageGrid],
        merge_size: u32,
    ) -> Result<Vec<u32>> {
        let text = self.template.render(messages, true)?;
        let expanded = self.expand_image_pads(&text, grids, merge_size)?;
        self.tokenizer.encode(&expanded)
    }

    /// Byte ranges of `full` (the rendering of all `messages`) that hold assistant answers and
    /// their closing eos token.
    ///
    /// The template is treated as a black box: for assistant message `i`, rendering
    /// `messages[..i]` with the generation prompt gives the text up to where the answer starts,
    /// and rendering `messages[..=i]` gives the text up to where the turn ends. Both must be
    /// prefixes of the full rendering (true for Qwen's and most chat templates); the answer span
    /// is then cut after the last eos token of the turn, dropping the template's separator.
    fn assistant_spans(&self, messages: &[Message], full: &str) -> Result<Vec<Range<usize>>> {
        let eos = &self.tokenizer.special_strings().eos;
        let mut spans = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if message.role != ASSISTANT_ROLE {
                continue;
            }
            let before = self.template.render(&messages[..i], true)?;
            let through = self.template.render(&messages[..=i], false)?;
            if !through.starts_with(&before) || !full.starts_with(&through) {
                return Err(TextError::TemplateNotPrefixStable { message_index: i });
            }
            let turn = &through[before.len()..];
            let end = match turn.rfind(eos.as_str()) {
                Some(pos) => before.len() + pos + eos.len(),
                None => through.len(),
            };
            spans.push(before.len()..end);
        }
        Ok(spans)
    }
}

fn label_or_ignore(id: u32, keep: bool) -> i64 {
    if keep { i64::from(id) } else { IGNORE_INDEX }
}

/// Whether the token at byte range `start..end` touches `span`.
fn overlaps(start: usize, end: usize, span: &Range<usize>) -> bool {
    if start == end {
        span.contains(&start)
    } else {
        start < span.end && end > span.start
    }
}

/// Text after placeholder expansion, with what is needed to map byte positions of the original
/// text into it.
struct Expanded {
    text: String,
    /// `(original position of a placeholder, bytes inserted by expanding it)`, in text order.
    shifts: Vec<(usize, usize)>,
}

impl Expanded {
    /// Maps a byte position of the unexpanded text to the expanded text. A position at the start
    /// of a placeholder stays before its copies.
    fn map(&self, pos: usize) -> usize {
        pos + self
            .shifts
            .iter()
            .take_while(|(at, _)| *at < pos)
            .map(|(_, added)| added)
            .sum::<usize>()
    }
}

fn expand(text: &str, placeholder: &str, grids: &[ImageGrid], merge_size: u32) -> Result<Expanded> {
    let positions: Vec<usize> = text.match_indices(placeholder).map(|(i, _)| i).collect();
    if positions.len() != grids.len() {
        return Err(TextError::ImageCountMismatch {
            placeholders: positions.len(),
            grids: grids.len(),
        });
    }
    let mut out = String::with_capacity(text.len());
    let mut shifts = Vec::with_capacity(grids.len());
    let mut last = 0;
    for (&at, grid) in positions.iter().zip(grids) {
        let copies = grid.llm_tokens(merge_size);
        out.push_str(&text[last..at]);
        out.push_str(&placeholder.repeat(copies));
        // An image with zero tokens removes its placeholder; `saturating_sub` keeps the map
        // monotone in that degenerate case.
        shifts.push((
            at,
            (copies * placeholder.len()).saturating_sub(placeholder.len()),
        ));
        last = at + placeholder.len();
    }
    out.push_str(&text[last..]);
    Ok(Expanded { text: out, shifts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processor_can_be_shared_across_loader_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<TextProcessor>();
    }

    #[test]
    fn expansion_maps_positions_past_placeholders() {
        let p = "<P>";
        let grids = [
            ImageGrid { t: 1, h: 4, w: 6 },
            ImageGrid { t: 1, h: 2, w: 2 },
        ];
        let e = expand("a<P>bc<P>d", p, &grids, 2).unwrap();
        assert_eq!(e.text, format!("a{}bc{}d", p.repeat(6), p));
        assert_eq!(e.map(0), 0);
        assert_eq!(e.map(1), 1);
        assert_eq!(&e.text[e.map(4)..e.map(6)], "bc");
        assert_eq!(&e.text[e.map(9)..], "d");
    }

    #[test]
    fn expansion_count_mismatch_names_both_counts() {
        let err = expand("<P><P>", "<P>", &[ImageGrid { t: 1, h: 2, w: 2 }], 2)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "the chat has 2 image placeholders but 1 image grids were given"
        );
    }
}

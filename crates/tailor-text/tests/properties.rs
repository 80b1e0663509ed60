//! Property tests: batching equals per-sample results padded, labels stay aligned with ids under
//! any padding and skipping, and the assistant mask trains exactly the answers.

mod common;

use proptest::prelude::*;
use tailor_core::{IGNORE_INDEX, ImageGrid, LabelMask, TokenBatch};
use tailor_text::{CollateConfig, EncodedSample, Message, Part, RopeConfig, collate, rope_index};

use common::{processor, rope_config};

const PAD: u32 = 0;
const IMG: u32 = 9;
const CFG: RopeConfig = RopeConfig {
    image_token_id: IMG,
    video_token_id: 8,
    spatial_merge_size: 2,
    tokens_per_second: 2,
};

/// A synthetic sample: text ids (1..=7, never the image id), image runs that match their grids
/// between marker ids, and labels that are either the id or IGNORE_INDEX.
fn sample() -> impl Strategy<Value = (EncodedSample, Vec<ImageGrid>)> {
    let piece = (
        prop::collection::vec(1u32..8, 0..6),
        prop::option::of((1u32..4, 1u32..4)),
    );
    (prop::collection::vec(piece, 1..4), any::<u64>()).prop_map(|(pieces, seed)| {
        let mut ids = Vec::new();
        let mut grids = Vec::new();
        for (text, image) in pieces {
            ids.extend(text);
            if let Some((h, w)) = image {
                let grid = ImageGrid {
                    t: 1,
                    h: 2 * h,
                    w: 2 * w,
                };
                // Like <|vision_start|> … <|vision_end|>, text always separates two images: two
                // adjacent runs would be one run for transformers' modality grouping.
                ids.push(6);
                ids.extend(std::iter::repeat_n(IMG, grid.llm_tokens(2)));
                ids.push(7);
                grids.push(grid);
            }
        }
        let labels = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                if id == IMG || (seed >> (i % 64)) & 1 == 1 {
                    IGNORE_INDEX
                } else {
                    i64::from(id)
                }
            })
            .collect();
        (
            EncodedSample {
                input_ids: ids,
                labels,
            },
            grids,
        )
    })
}

fn row<T: Copy>(values: &[T], batch: &TokenBatch, r: usize) -> Vec<T> {
    values[r * batch.seq_len..(r + 1) * batch.seq_len].to_vec()
}

fn position_row(batch: &TokenBatch, axis: usize, r: usize) -> Vec<i64> {
    let cells = batch.batch_size * batch.seq_len;
    let at = axis * cells + r * batch.seq_len;
    batch.position_ids[at..at + batch.seq_len].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batch_equals_single_samples_padded(
        items in prop::collection::vec(sample(), 1..5),
        limit in prop::option::of(1usize..40),
    ) {
        let (samples, grids): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let cfg = CollateConfig { pad_id: PAD, max_length: limit, rope: CFG };
        let Ok((batch, report)) = collate(&samples, &grids, &cfg) else {
            // Only an all-skipped batch may fail.
            prop_assert!(samples.iter().all(|s| s.input_ids.len() > limit.unwrap()));
            return Ok(());
        };
        // Kept and skipped partition the input, in order, by the length limit.
        let mut seen: Vec<usize> = report.kept.clone();
        seen.extend(report.skipped.iter().map(|s| s.index));
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..samples.len()).collect::<Vec<_>>());
        for s in &report.skipped {
            prop_assert!(s.len > limit.unwrap());
            prop_assert_eq!(s.len, samples[s.index].input_ids.len());
        }
        prop_assert_eq!(batch.batch_size, report.kept.len());
        let has_images = report.kept.iter().any(|&i| !grids[i].is_empty());

        for (r, &i) in report.kept.iter().enumerate() {
            let s = &samples[i];
            let n = s.input_ids.len();
            if let Some(limit) = limit {
                prop_assert!(n <= limit);
            }
            let (single, _) = collate(std::slice::from_ref(s), std::slice::from_ref(&grids[i]), &cfg).unwrap();
            let ids = row(&batch.input_ids, &batch, r);
            let labels = row(&batch.labels, &batch, r);
            let mask = row(&batch.attention_mask, &batch, r);
            prop_assert_eq!(&ids[..n], &single.input_ids[..]);
            prop_assert_eq!(&labels[..n], &single.labels[..]);
            prop_assert!(ids[n..].iter().all(|&id| id == PAD));
            prop_assert!(labels[n..].iter().all(|&l| l == IGNORE_INDEX));
            prop_assert!(mask[..n].iter().all(|&m| m == 1) && mask[n..].iter().all(|&m| m == 0));
            // Labels align with ids everywhere.
            for (&id, &l) in ids.iter().zip(&labels) {
                prop_assert!(l == IGNORE_INDEX || l == i64::from(id));
            }
            prop_assert_eq!(batch.rope_deltas[r], single.rope_deltas[0]);
            let direct = rope_index(&s.input_ids, &grids[i], &[], &CFG).unwrap();
            prop_assert_eq!(batch.rope_deltas[r], direct.rope_delta);
            for axis in 0..3 {
                let positions = position_row(&batch, axis, r);
                prop_assert_eq!(&positions[..n], &position_row(&single, axis, 0)[..]);
                prop_assert_eq!(&positions[..n], &direct.rows[axis][..]);
                // Padding: 0 when the batch has images (get_rope_index), else 0..L continues.
                for (p, &v) in positions.iter().enumerate().skip(n) {
                    prop_assert_eq!(v, if has_images { 0 } else { p as i64 });
                }
            }
        }
    }
}

/// Words for generated chats; answers never start with whitespace, so no token straddles the
/// start of an answer.
const WORDS: &[&str] = &[
    "dress",
    "WOMEN/dresses:",
    "The",
    "shirt",
    "is",
    "with",
    "cotton",
    "fabric.",
    "Ünïcode",
    "42",
    "a",
    "\n",
    "  ",
    "long-sleeve",
    "?",
    "MEN/tees:",
];

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 1..6).prop_map(|w| w.join(" "))
}

fn answer() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["WOMEN/dresses:", "MEN/tees:", "Short."][..]),
        words(),
    )
        .prop_map(|(head, rest)| format!("{head} {rest}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn assistant_mask_trains_exactly_the_answers(
        system in prop::option::of(words()),
        turns in prop::collection::vec((words(), any::<bool>(), answer()), 1..4),
        sizes in prop::collection::vec((1u32..4, 1u32..4), 4),
    ) {
        let p = processor();
        let mut chat = Vec::new();
        if let Some(system) = system {
            chat.push(Message::text("system", &system));
        }
        let mut grids = Vec::new();
        for (user, with_image, reply) in &turns {
            if *with_image {
                let (h, w) = sizes[grids.len()];
                grids.push(ImageGrid { t: 1, h: 2 * h, w: 2 * w });
                chat.push(Message::parts("user", vec![Part::Image, Part::Text(user.clone())]));
            } else {
                chat.push(Message::text("user", user));
            }
            chat.push(Message::text("assistant", reply));
        }
        let s = p.encode_chat(&chat, &grids, 2, LabelMask::Assistant).unwrap();
        prop_assert_eq!(s.input_ids.len(), s.labels.len());
        let mut runs = Vec::new();
        let mut current = Vec::new();
        for (&id, &label) in s.input_ids.iter().zip(&s.labels) {
            if label == IGNORE_INDEX {
                if !current.is_empty() {
                    runs.push(std::mem::take(&mut current));
                }
            } else {
                prop_assert_eq!(label, i64::from(id));
                current.push(id);
            }
        }
        if !current.is_empty() {
            runs.push(current);
        }
        let decoded: Vec<String> =
            runs.iter().map(|r| p.tokenizer().decode(r, false).unwrap()).collect();
        let want: Vec<String> = turns.iter().map(|(_, _, a)| format!("{a}<|im_end|>")).collect();
        prop_assert_eq!(decoded, want);

        // The batch of this one sample has the same ids and labels.
        let cfg = CollateConfig { pad_id: p.tokenizer().special().pad, max_length: None, rope: rope_config() };
        let (batch, _) = collate(std::slice::from_ref(&s), &[grids], &cfg).unwrap();
        prop_assert_eq!(batch.input_ids, s.input_ids);
        prop_assert_eq!(batch.labels, s.labels);
    }
}

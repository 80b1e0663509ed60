//! The worked examples of `shared/docs/qwen2_5_vl_reference.md` (§4.3 M-RoPE positions and §6
//! rendered chat templates), plus the template-loading order of transformers 5.24.

mod common;

use std::fs;

use tailor_text::{ChatTemplate, Message, Part, RopeConfig, TemplateSource, rope_index};

use common::{grid, tiny_model_dir};

/// Ids are arbitrary but distinct; positions depend only on which are image tokens.
const T: u32 = 1;
const VS: u32 = 2;
const VE: u32 = 3;
const IMG: u32 = 4;
const CFG: RopeConfig = RopeConfig {
    image_token_id: IMG,
    video_token_id: 5,
    spatial_merge_size: 2,
    tokens_per_second: 2,
};

fn check(ids: &[u32], grids: &[tailor_core::ImageGrid], want: [&[i64]; 3], want_delta: i64) {
    let got = rope_index(ids, grids, &[], &CFG).unwrap();
    for (row, want_row) in got.rows.iter().zip(want) {
        assert_eq!(row.as_slice(), want_row);
    }
    assert_eq!(got.rope_delta, want_delta);
}

#[test]
fn doc_4_3_one_image() {
    let mut ids = vec![T, T, T, VS];
    ids.extend([IMG; 6]);
    ids.extend([VE, T, T]);
    check(
        &ids,
        &[grid(1, 4, 6)],
        [
            &[0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8, 9],
            &[0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8, 9],
            &[0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9],
        ],
        -3,
    );
}

#[test]
fn doc_4_3_two_images() {
    let mut ids = vec![T, VS];
    ids.extend([IMG; 4]);
    ids.extend([VE, T, VS]);
    ids.extend([IMG; 2]);
    ids.extend([VE, T]);
    check(
        &ids,
        &[grid(1, 4, 4), grid(1, 2, 4)],
        [
            &[0, 1, 2, 2, 2, 2, 4, 5, 6, 7, 7, 9, 10],
            &[0, 1, 2, 2, 3, 3, 4, 5, 6, 7, 7, 9, 10],
            &[0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        ],
        -2,
    );
}

#[test]
fn doc_4_3_text_only_counts_up() {
    check(&[T, T, T], &[], [&[0, 1, 2], &[0, 1, 2], &[0, 1, 2]], 0);
}

fn template() -> ChatTemplate {
    ChatTemplate::from_dir(&tiny_model_dir()).unwrap()
}

#[test]
fn doc_6_rendered_examples() {
    let t = template();
    let cases: [(Vec<Message>, bool, &str); 3] = [
        (
            vec![Message::parts(
                "user",
                vec![Part::Image, Part::Text("What is this?".into())],
            )],
            true,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            vec![
                Message::text("system", "Be brief."),
                Message::parts(
                    "user",
                    vec![Part::Text("Compare".into()), Part::Image, Part::Image],
                ),
                Message::parts("assistant", vec![Part::Text("They differ.".into())]),
            ],
            false,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCompare<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\nThey differ.<|im_end|>\n",
        ),
        (
            vec![
                Message::text("user", "Hello"),
                Message::text("assistant", "Hi!"),
            ],
            false,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>\n",
        ),
    ];
    for (messages, generation_prompt, want) in cases {
        assert_eq!(t.render(&messages, generation_prompt).unwrap(), want);
    }
}

#[test]
fn doc_6_roles_are_verbatim_and_system_parts_render() {
    let t = template();
    let out = t
        .render(
            &[
                Message::parts("system", vec![Part::Text("Sys".into())]),
                Message::text("critic", "x"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nSys<|im_end|>\n<|im_start|>critic\nx<|im_end|>\n"
    );
}

/// Writes `files` into a fresh directory and loads the template from it.
fn load_from(files: &[(&str, &str)]) -> tailor_text::Result<ChatTemplate> {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        fs::write(dir.path().join(name), body).unwrap();
    }
    ChatTemplate::from_dir(dir.path())
}

fn json_template(text: &str) -> String {
    serde_json::json!({ "chat_template": text }).to_string()
}

#[test]
fn template_loading_follows_transformers_5_24_processor_order() {
    let source_and_text = |files: &[(&str, &str)]| {
        let t = load_from(files).unwrap();
        (t.source(), t.render(&[], false).unwrap())
    };
    let processor = json_template("processor");
    let legacy = json_template("legacy");
    let tokenizer = json_template("tokenizer");
    let all = [
        ("processor_config.json", processor.as_str()),
        ("chat_template.json", legacy.as_str()),
        ("chat_template.jinja", "jinja"),
        ("tokenizer_config.json", tokenizer.as_str()),
    ];
    assert_eq!(
        source_and_text(&all),
        (TemplateSource::ProcessorConfig, "processor".into())
    );
    // transformers 5.24 reads the legacy chat_template.json before chat_template.jinja.
    assert_eq!(
        source_and_text(&all[1..]),
        (TemplateSource::ChatTemplateJson, "legacy".into())
    );
    assert_eq!(
        source_and_text(&all[2..]),
        (TemplateSource::ChatTemplateJinja, "jinja".into())
    );
    assert_eq!(
        source_and_text(&all[3..]),
        (TemplateSource::TokenizerConfig, "tokenizer".into())
    );
    let err = load_from(&[]).unwrap_err().to_string();
    assert!(err.starts_with("no chat template in"), "{err}");
}

#[test]
fn special_token_variables_reach_the_template() {
    let t = load_from(&[(
        "tokenizer_config.json",
        r#"{"chat_template": "{{ eos_token }}|{{ pad_token }}|{{ bos_token }}", "eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>"}, "bos_token": null}"#,
    )])
    .unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "<|im_end|>|<|endoftext|>|");
}

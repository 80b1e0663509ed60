//! Parity with transformers 5.24 and TRL's `sft_vlm.py` collator on the tiny model.
//!
//! Expected values come from `tools/reference/text_fixtures.py` (fixture
//! `tests/fixtures/text/parity.json`); regenerate with the command in that script's docstring.

mod common;

use serde_json::Value;
use tailor_core::{IGNORE_INDEX, LabelMask};
use tailor_text::{
    CollateConfig, EncodedSample, Message, TemplateSource, VideoGrid, collate, rope_index,
};

use common::{grids, processor, rope_config, text_fixture, tiny_model_dir};

fn fixture() -> Value {
    let text = std::fs::read_to_string(text_fixture("parity.json")).expect("parity fixture");
    serde_json::from_str(&text).expect("parity fixture is JSON")
}

/// Deserialises a JSON array.
fn list<T: serde::de::DeserializeOwned>(value: &Value) -> Vec<T> {
    serde_json::from_value(value.clone()).expect("JSON array of the expected type")
}

/// Flattens a JSON array of arrays (of arrays) of integers in row-major order.
fn flat(value: &Value) -> Vec<i64> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_i64().expect("integer")],
        other => panic!("not an integer array: {other}"),
    }
}

fn chat<'a>(fixture: &'a Value, name: &str) -> &'a Value {
    fixture["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no chat {name}"))
}

fn messages(chat: &Value) -> Vec<Message> {
    serde_json::from_value(chat["messages"].clone()).expect("messages deserialise")
}

#[test]
fn special_ids_come_from_the_tokenizer_and_match_the_config() {
    let f = fixture();
    let p = processor();
    let special = p.tokenizer().special();
    let ids = &f["special_ids"];
    assert_eq!(i64::from(special.pad), ids["pad"].as_i64().unwrap());
    assert_eq!(i64::from(special.eos), ids["eos"].as_i64().unwrap());
    assert_eq!(
        i64::from(special.image_pad),
        ids["image_pad"].as_i64().unwrap()
    );
    assert_eq!(
        i64::from(special.video_pad),
        ids["video_pad"].as_i64().unwrap()
    );
    assert_eq!(
        i64::from(special.vision_start),
        ids["vision_start"].as_i64().unwrap()
    );
    assert_eq!(
        i64::from(special.vision_end),
        ids["vision_end"].as_i64().unwrap()
    );
    let rope = rope_config();
    assert_eq!(rope.image_token_id, special.image_pad);
    assert_eq!(rope.video_token_id, special.video_pad);
    assert_eq!(
        i64::from(rope.spatial_merge_size),
        f["merge_size"].as_i64().unwrap()
    );
    assert_eq!(p.template().source(), TemplateSource::ChatTemplateJson);
}

#[test]
fn every_chat_renders_and_encodes_like_the_processor() {
    let f = fixture();
    let p = processor();
    let special = *p.tokenizer().special();
    let merge = f["merge_size"].as_u64().unwrap() as u32;
    for c in f["chats"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let msgs = messages(c);
        let gen_prompt = c["add_generation_prompt"].as_bool().unwrap();
        let g = grids(&c["image_grid_thw"]);
        let want_ids: Vec<u32> = list(&c["input_ids"]);

        let text = p.template().render(&msgs, gen_prompt).unwrap();
        assert_eq!(text, c["text"].as_str().unwrap(), "{name}: rendered text");
        assert!(flat(&c["attention_mask"]).iter().all(|&m| m == 1));
        let tokens = flat(&c["mm_token_type_ids"]);
        for (&id, &kind) in want_ids.iter().zip(&tokens) {
            assert_eq!(kind == 1, id == special.image_pad, "{name}: token types");
        }

        if gen_prompt {
            let ids = p.encode_prompt(&msgs, &g, merge).unwrap();
            assert_eq!(ids, want_ids, "{name}: prompt ids");
            continue;
        }
        let recipe = p.encode_chat(&msgs, &g, merge, LabelMask::Recipe).unwrap();
        assert_eq!(recipe.input_ids, want_ids, "{name}: ids");
        let want_recipe: Vec<i64> = want_ids
            .iter()
            .map(|&id| {
                if id == special.pad || id == special.image_pad {
                    IGNORE_INDEX
                } else {
                    i64::from(id)
                }
            })
            .collect();
        assert_eq!(recipe.labels, want_recipe, "{name}: recipe labels");

        let assistant = p
            .encode_chat(&msgs, &g, merge, LabelMask::Assistant)
            .unwrap();
        assert_eq!(
            assistant.input_ids, want_ids,
            "{name}: ids (assistant mask)"
        );
        let want_assistant: Vec<i64> = list(&c["assistant_labels"]);
        assert_eq!(assistant.labels, want_assistant, "{name}: assistant labels");
    }
}

#[test]
fn batches_collate_like_trl_and_the_model() {
    let f = fixture();
    let p = processor();
    let merge = f["merge_size"].as_u64().unwrap() as u32;
    let cfg = CollateConfig {
        pad_id: p.tokenizer().special().pad,
        max_length: None,
        rope: rope_config(),
    };
    for b in f["batches"].as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let mut samples: Vec<EncodedSample> = Vec::new();
        let mut sample_grids = Vec::new();
        for member in b["chats"].as_array().unwrap() {
            let c = chat(&f, member.as_str().unwrap());
            let msgs = messages(c);
            let g = grids(&c["image_grid_thw"]);
            let sample = if c["add_generation_prompt"].as_bool().unwrap() {
                // Prompts are collated for inference; their labels are the recipe rule's.
                let ids = p.encode_prompt(&msgs, &g, merge).unwrap();
                let special = p.tokenizer().special();
                let labels = ids
                    .iter()
                    .map(|&id| {
                        if id == special.pad || id == special.image_pad {
                            IGNORE_INDEX
                        } else {
                            i64::from(id)
                        }
                    })
                    .collect();
                EncodedSample {
                    input_ids: ids,
                    labels,
                }
            } else {
                p.encode_chat(&msgs, &g, merge, LabelMask::Recipe).unwrap()
            };
            samples.push(sample);
            sample_grids.push(g);
        }
        let (batch, report) = collate(&samples, &sample_grids, &cfg).unwrap();
        assert!(report.skipped.is_empty());
        let flat_grids: Vec<_> = sample_grids.iter().flatten().copied().collect();
        assert_eq!(flat_grids, grids(&b["image_grid_thw"]), "{name}: grids");
        let ids: Vec<i64> = batch.input_ids.iter().map(|&x| i64::from(x)).collect();
        assert_eq!(ids, flat(&b["input_ids"]), "{name}: input_ids");
        let mask: Vec<i64> = batch.attention_mask.iter().map(|&x| i64::from(x)).collect();
        assert_eq!(mask, flat(&b["attention_mask"]), "{name}: attention_mask");
        assert_eq!(batch.labels, flat(&b["recipe_labels"]), "{name}: labels");
        assert_eq!(
            batch.position_ids,
            flat(&b["position_ids"]),
            "{name}: position_ids"
        );
        assert_eq!(
            batch.rope_deltas,
            flat(&b["rope_deltas"]),
            "{name}: rope_deltas"
        );
    }
}

#[test]
fn rope_index_matches_get_rope_index_with_videos() {
    let f = fixture();
    let cfg = rope_config();
    for case in f["rope_cases"].as_array().unwrap() {
        let ids: Vec<u32> = list(&case["input_ids"]);
        let images = grids(&case["image_grid_thw"]);
        let seconds: Vec<f32> = list(&case["second_per_grid_ts"]);
        let videos: Vec<VideoGrid> = grids(&case["video_grid_thw"])
            .into_iter()
            .zip(seconds)
            .map(|(grid, second_per_grid)| VideoGrid {
                grid,
                second_per_grid,
            })
            .collect();
        let got = rope_index(&ids, &images, &videos, &cfg).unwrap();
        let rows: Vec<i64> = got.rows.concat();
        assert_eq!(rows, flat(&case["position_ids"]), "{}", case["name"]);
        assert_eq!(got.rope_delta, case["rope_delta"].as_i64().unwrap());
    }
}

#[test]
fn tokenizer_config_template_is_only_a_fallback() {
    // The tiny model, like the real checkpoint, keeps a text-only template in
    // tokenizer_config.json; the processor template in chat_template.json must win.
    let p = processor();
    let msgs = [Message::parts("user", vec![tailor_text::Part::Image])];
    let text = p.template().render(&msgs, false).unwrap();
    assert!(
        text.contains("<|vision_start|><|image_pad|><|vision_end|>"),
        "{text}"
    );
    assert!(tiny_model_dir().join("tokenizer_config.json").is_file());
}

//! The whole forward pass is differentiable: with every weight a `Var`, one backward pass from a
//! loss on a few logits gives every weight a finite, non-zero gradient. This guards against ops
//! without a backward (candle's fast kernels detach silently), which would leave LoRA untrained.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tailor_core::ImageGrid;
use tailor_model::{Config, Qwen25Vl, VlmInputs};
use tailor_text::{RopeConfig, rope_index};

#[test]
fn every_weight_receives_a_gradient() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model/windows");
    let cfg = Config::from_file(&dir.join("config.json")).unwrap();
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = Qwen25Vl::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
    // Random values everywhere (norm weights around 1) so that no gradient is zero by symmetry.
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let noise = Tensor::randn(0f32, 0.2, var.shape(), &dev).unwrap();
        let value = if name.ends_with("norm.weight")
            || name.contains("norm1")
            || name.contains("norm2")
            || name.contains("ln_q")
        {
            (noise + 1.0).unwrap()
        } else {
            noise
        };
        var.set(&value).unwrap();
    }

    // Two images, one of them large enough for several attention windows.
    let grids = [
        ImageGrid { t: 1, h: 12, w: 10 },
        ImageGrid { t: 1, h: 4, w: 4 },
    ];
    let t = &cfg.tokens;
    let mut ids = vec![1u32, 2, t.vision_start];
    ids.extend(std::iter::repeat_n(t.image, grids[0].llm_tokens(2)));
    ids.extend([t.vision_end, 3, t.vision_start]);
    ids.extend(std::iter::repeat_n(t.image, grids[1].llm_tokens(2)));
    ids.extend([t.vision_end, 4, 5]);
    let rope = RopeConfig::from_config_json(&dir.join("config.json")).unwrap();
    let positions = rope_index(&ids, &grids, &[], &rope).unwrap();
    let l = ids.len();
    let patches: usize = grids.iter().map(ImageGrid::patches).sum();
    let inputs = VlmInputs {
        input_ids: Tensor::from_slice(&ids, (1, l), &dev).unwrap(),
        attention_mask: Tensor::ones((1, l), DType::U8, &dev).unwrap(),
        position_ids: Tensor::from_vec(positions.rows.concat(), (3, 1, l), &dev).unwrap(),
        pixel_values: Some(
            Tensor::randn(0f32, 1.0, (patches, cfg.vision.patch_dim()), &dev).unwrap(),
        ),
        image_grids: grids.to_vec(),
    };

    let hidden = model.forward(&inputs).unwrap();
    let logits = model.logits_at(&hidden, &[(0, l - 2), (0, l - 1)]).unwrap();
    let targets = Tensor::new(&[5u32, 6], &dev).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
    let grads = loss.backward().unwrap();

    let vars = varmap.data().lock().unwrap();
    assert!(vars.len() > 50);
    for (name, var) in vars.iter() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} receives no gradient"));
        let norm = grad
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm.is_finite() && norm > 0.0,
            "{name}: gradient norm² {norm}"
        );
    }
}

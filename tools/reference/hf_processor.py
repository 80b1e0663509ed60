"""The Qwen2.5-VL processor with the PIL image processor, built from a model folder's files.

transformers 5.24's `AutoProcessor.from_pretrained(..., backend="pil")` fails (the video processor
has no PIL backend), and the default image processor is the torchvision one, which tailor does not
match bit for bit; so every reference script builds the processor here, the same way.
"""
import json
from pathlib import Path

from transformers import AutoTokenizer, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor


def build_processor(model_dir: Path, padding_side: str | None = None, pixels: int | None = None) -> Qwen2_5_VLProcessor:
    """`padding_side` None keeps (and checks) the tokenizer's right padding; `pixels` pins both
    min_pixels and max_pixels so that every image gets the same grid."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if padding_side is None:
        assert tokenizer.padding_side == "right", tokenizer.padding_side
    else:
        tokenizer.padding_side = padding_side
    pre = json.loads((model_dir / "preprocessor_config.json").read_text())
    pre = {k: v for k, v in pre.items() if k not in ("image_processor_type", "processor_class")}
    if pixels is not None:
        pre["min_pixels"] = pre["max_pixels"] = pixels
    template = json.loads((model_dir / "chat_template.json").read_text())["chat_template"]
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(**pre),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=template,
    )

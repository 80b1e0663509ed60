#!/usr/bin/env python3
"""Write the image-processor parity fixtures for tailor-image from transformers 5.24 + Pillow 13.

Regenerate (from the repository root, offline):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/image_fixtures.py tests/fixtures/image

Pinned versions (checked at start-up): transformers 5.24.0, pillow 13.0.0, numpy 2.x; torch and
torchvision as installed (transformers imports them; the PIL processor does not use them).

Every case is an input image file (PNG or JPEG, written here from seeded arrays or by hand for
PNG variants Pillow cannot save) plus the config dict passed to `Qwen2VLImageProcessorPil(**cfg)`,
which is also what `from_pretrained` does with a preprocessor_config.json. For each case the
script stores, next to the input:

- `<name>.decoded.bin`: the RGB uint8 array that the processor works on
  (`transformers.image_transforms.convert_to_rgb(Image.open(f), return_numpy=True)`), H×W×3;
  skipped for plain 8-bit RGB PNGs, whose pixels are the file's own;
- `<name>.resized.bin`: Pillow's `Image.resize((w, h), BICUBIC)` of it at the size that
  `smart_resize` picks, H'×W'×3 uint8;
- `<name>.pv.bin`: `pixel_values` as little-endian float32, with only the first temporal frame of
  each channel block kept (`[rows, 3, 196]`): the script asserts that the second frame equals the
  first before dropping it, so the file still pins every value while halving its size.

`manifest.json` lists the cases with their sizes, grids and configs. Small images and small
`max_pixels` keep the directory well under 1.5 MB.
"""

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import transformers
from PIL import Image
from transformers import Qwen2VLImageProcessorPil
from transformers.image_transforms import convert_to_rgb
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

assert transformers.__version__ == "5.24.0", transformers.__version__
assert PIL.__version__ == "13.0.0", PIL.__version__

SMALL = {"min_pixels": 784, "max_pixels": 3136}


def photo(h, w, seed, channels=3, noise=12.0):
    """A deterministic photo-like array: smooth gradients, texture, hard 0/255 edges (which make
    bicubic overshoot and exercise clamping) and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        base = 128 + 90 * np.sin(x / (3.0 + c) + c) * np.cos(y / (4.0 + 2 * c))
        base += (x * 255.0 / max(w, 1) - 128) * (0.3 if c == 1 else -0.2)
        base += rng.normal(0, noise, (h, w))
        checker = ((x // 5 + y // 7 + c) % 3) == 0
        base[checker] = 255 if c % 2 == 0 else 0
        planes.append(base)
    arr = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    return arr if channels > 1 else arr[..., 0]


def png_bytes(im, **kw):
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def jpeg_bytes(im, **kw):
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width, height, bit_depth, color_type, rows, extra=()):
    """A PNG from packed scanlines (filter type 0), for variants Pillow cannot write: 16-bit
    RGB/RGBA/LA, 2-bit grey with tRNS, palettes shorter than the indices used."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = b"".join(b"\x00" + bytes(r) for r in rows)
    chunks = [chunk(b"IHDR", ihdr)] + [chunk(k, d) for k, d in extra]
    chunks += [chunk(b"IDAT", zlib.compress(body, 9)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def pack_bits(values, bits):
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc = (acc << bits) | int(v)
        n += bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return out


def cases():
    """(name, file extension, bytes, config, note)."""
    out = []

    def add(name, ext, data, config, note):
        out.append((name, ext, data, config, note))

    # The reference doc's test vector (§2.5), with the 3B config in the `size` form.
    y, x = np.mgrid[0:50, 0:80]
    vec = np.stack([(7 * x + 13 * y) % 256, (3 * x + 5 * y + 50) % 256, (11 * x + 2 * y + 100) % 256], -1)
    add("test_vector_50x80", "png", png_bytes(Image.fromarray(vec.astype(np.uint8))),
        {"size": {"shortest_edge": 3136, "longest_edge": 12845056}}, "reference doc §2.5, size form")

    def rgb(h, w, seed, noise=12.0):
        return Image.fromarray(photo(h, w, seed, noise=noise))

    add("no_resize", "png", png_bytes(rgb(28, 56, 1)), SMALL, "28x56 is already a multiple of 28")
    add("upscale", "png", png_bytes(rgb(11, 20, 2)), SMALL, "both passes upscale")
    add("downscale", "png", png_bytes(rgb(150, 97, 3)), SMALL, "horizontal pass first")
    add("downscale_vertical_first", "png", png_bytes(rgb(200, 60, 4)), SMALL,
        "height shrinks more than twice the width: Pillow 13 runs the vertical pass first")
    add("height_shrinks_width_grows", "png", png_bytes(rgb(61, 43, 5)), SMALL,
        "like 1101x750 -> 1092x756: vertical pass first")
    add("horizontal_only", "png", png_bytes(rgb(56, 70, 6)), SMALL, "only the width changes")
    add("vertical_only", "png", png_bytes(rgb(70, 56, 7)), SMALL, "only the height changes")
    add("downscale_4x", "png", png_bytes(rgb(120, 125, 8)), {"min_pixels": 56, "max_pixels": 784},
        "19-tap kernels")
    add("extreme_wide", "png", png_bytes(rgb(12, 2000, 9, noise=0)), {"min_pixels": 56, "max_pixels": 100},
        "aspect 167, clamped to 28 rows")
    add("extreme_tall", "png", png_bytes(rgb(2000, 12, 10, noise=0)), {"min_pixels": 56, "max_pixels": 100},
        "aspect 167, vertical pass first")
    add("flat_overrides_size", "png", png_bytes(rgb(33, 47, 11)),
        {"size": {"shortest_edge": 100000, "longest_edge": 200000}, "min_pixels": 784, "max_pixels": 1568},
        "flat min/max_pixels override size (transformers 5.24)")
    add("rescale_only", "png", png_bytes(rgb(30, 30, 12)), {**SMALL, "do_normalize": False}, "no normalize")
    add("custom_norm", "png", png_bytes(rgb(30, 30, 13)),
        {**SMALL, "image_mean": 0.5, "image_std": [0.25, 0.5, 0.75], "rescale_factor": 0.004},
        "scalar mean, odd std and rescale factor")

    # Greyscale and alpha.
    add("gray_L", "png", png_bytes(Image.fromarray(photo(40, 33, 14, 1))), SMALL, "mode L")
    rgba = np.concatenate([photo(45, 30, 15), np.tile(np.linspace(0, 255, 30).astype(np.uint8), (45, 1))[..., None]], -1)
    add("rgba_partial", "png", png_bytes(Image.fromarray(rgba, "RGBA")), SMALL, "alpha 0..255 across")
    la = np.stack([photo(30, 26, 16, 1), np.tile(np.linspace(255, 0, 26).astype(np.uint8), (30, 1))], -1)
    add("la_partial", "png", png_bytes(Image.fromarray(la, "LA")), SMALL, "mode LA")

    # Palettes.
    pal_img = Image.fromarray(photo(30, 44, 17)).quantize(colors=60)
    trns = bytes(int(a) for a in np.linspace(0, 255, 60))
    add("palette_trns", "png", png_bytes(pal_img, transparency=trns), SMALL, "P with a tRNS alpha per entry")
    add("palette_one_transparent", "png", png_bytes(pal_img, transparency=5), SMALL, "P, one transparent index")
    pal16 = Image.fromarray(photo(25, 31, 18)).quantize(colors=12)
    add("palette_4bit", "png", png_bytes(pal16, bits=4), SMALL, "P;4, no tRNS")
    idx = (np.arange(20 * 22).reshape(20, 22) % 7)
    short_plte = bytes([200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 90])  # 4 entries; indices up to 6
    add("palette_short_plte", "png",
        raw_png(22, 20, 8, 3, [bytes(r) for r in idx.astype(np.uint8)], [(b"PLTE", short_plte), (b"tRNS", b"\x80\xff")]),
        SMALL, "indices past PLTE read opaque black; tRNS shorter than PLTE")

    # Transparent colours on greyscale / RGB.
    g = photo(24, 36, 19, 1)
    g[::3, ::2] = 77
    add("gray_trns", "png", png_bytes(Image.fromarray(g), transparency=77), SMALL, "L with a tRNS grey")
    c = photo(24, 36, 20)
    c[::4, ::3] = (10, 20, 30)
    add("rgb_trns", "png", png_bytes(Image.fromarray(c), transparency=(10, 20, 30)), SMALL, "RGB with a tRNS colour")

    # Bit depths Pillow maps to odd modes.
    v2 = (np.arange(18 * 21).reshape(18, 21) * 7 % 4)
    add("gray_2bit_trns", "png",
        raw_png(21, 18, 2, 0, [pack_bits(r, 2) for r in v2], [(b"tRNS", b"\x00\x00")]),
        SMALL, "L;2 scaled by 0x55; raw tRNS value 0 compared unscaled")
    v1 = (np.arange(19 * 23).reshape(19, 23) * 5 % 3 == 0)
    add("gray_1bit", "png", raw_png(23, 19, 1, 0, [pack_bits(r, 1) for r in v1]), SMALL, "mode 1")
    g16 = (photo(22, 27, 21, 1).astype(np.uint16) * 3)  # values up to 765: Pillow saturates at 255
    add("gray_16bit", "png", raw_png(27, 22, 16, 0, [r.astype(">u2").tobytes() for r in g16]), SMALL,
        "I;16 saturates at 255 in convert('RGB')")
    c16 = photo(21, 26, 22).astype(np.uint16) * 257 + 3
    add("rgb_16bit", "png", raw_png(26, 21, 16, 2, [r.astype(">u2").tobytes() for r in c16]), SMALL,
        "RGB;16B keeps the high bytes")
    a16 = np.concatenate([c16, (np.tile(np.linspace(0, 65535, 26), (21, 1))[..., None]).astype(np.uint16)], -1)
    add("rgba_16bit", "png", raw_png(26, 21, 16, 6, [r.astype(">u2").tobytes() for r in a16]), SMALL,
        "RGBA;16B high bytes, then composited")

    # JPEG.
    jp = Image.fromarray(photo(64, 48, 23))
    add("jpeg_420", "jpg", jpeg_bytes(jp, quality=85, subsampling=2), SMALL, "baseline 4:2:0")
    add("jpeg_422", "jpg", jpeg_bytes(jp, quality=90, subsampling=1), SMALL, "baseline 4:2:2")
    add("jpeg_444_progressive", "jpg", jpeg_bytes(jp, quality=90, subsampling=0, progressive=True),
        SMALL, "progressive 4:4:4")
    add("jpeg_420_progressive", "jpg", jpeg_bytes(Image.fromarray(photo(53, 71, 24)), quality=75, progressive=True),
        SMALL, "progressive 4:2:0, odd size")
    add("jpeg_gray", "jpg", jpeg_bytes(Image.fromarray(photo(40, 37, 25, 1)), quality=80), SMALL, "1 component")
    add("jpeg_cmyk", "jpg", jpeg_bytes(Image.fromarray(photo(30, 30, 26)).convert("CMYK"), quality=90), SMALL,
        "4 components, Pillow's CMYK;I")
    return out


def main():
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, ext, data, config, note in cases():
        path = out_dir / f"{name}.{ext}"
        path.write_bytes(data)
        processor = Qwen2VLImageProcessorPil(**config)
        with Image.open(path) as im:
            decoded = convert_to_rgb(im, return_numpy=True)
        with Image.open(path) as im:
            result = processor(images=[im], return_tensors="np")
        h, w = decoded.shape[:2]
        size = processor.size
        rh, rw = smart_resize(h, w, factor=28, min_pixels=size.shortest_edge, max_pixels=size.longest_edge)
        resized = np.asarray(Image.fromarray(decoded).resize((rw, rh), Image.Resampling.BICUBIC))
        pv = result["pixel_values"]
        grid = [int(v) for v in result["image_grid_thw"][0]]
        assert pv.dtype == np.float32 and pv.shape == (grid[0] * grid[1] * grid[2], 1176), pv.shape
        assert grid[1] * 14 == rh and grid[2] * 14 == rw, (grid, rh, rw)
        frames = pv.reshape(-1, 3, 2, 196)
        assert (frames[:, :, 0].view(np.uint32) == frames[:, :, 1].view(np.uint32)).all()
        # The decoded array is stored where decoding does something: not for 8-bit RGB PNGs,
        # whose pixels are the file's.
        with Image.open(path) as im:
            plain = im.format == "PNG" and im.mode == "RGB" and "transparency" not in im.info
        if not plain:
            decoded.astype(np.uint8).tofile(out_dir / f"{name}.decoded.bin")
        resized.astype(np.uint8).tofile(out_dir / f"{name}.resized.bin")
        np.ascontiguousarray(frames[:, :, 0]).astype("<f4").tofile(out_dir / f"{name}.pv.bin")
        manifest.append({
            "name": name,
            "input": path.name,
            "decoded": None if plain else f"{name}.decoded.bin",
            "note": note,
            "config": config,
            "decoded_hw": [h, w],
            "resized_hw": [rh, rw],
            "grid_thw": grid,
            "pixel_values_sum": float(pv.astype(np.float64).sum()),
        })
        print(f"{name:28} {w}x{h} -> {rw}x{rh} grid {grid}")
    (out_dir / "manifest.json").write_text(json.dumps({
        "generator": "tools/reference/image_fixtures.py",
        "versions": {"transformers": transformers.__version__, "pillow": PIL.__version__, "numpy": np.__version__},
        "pixel_values_layout": "per row: 3 channels x first temporal frame x 14 x 14, float32 LE; frame 2 == frame 1",
        "cases": manifest,
    }, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"{len(manifest)} cases, {total / 1024:.0f} KiB in {out_dir}")


if __name__ == "__main__":
    main()

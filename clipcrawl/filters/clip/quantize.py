"""int8 dynamic quantization of the image tower, chosen by measured fidelity ("quantize, then verify").

Which MatMuls tolerate int8 depends on the weights: on random-init ViT-B-32 the attention
projections and the first MLP layer (both fed by LayerNorm outputs) carry most of the error. So
the exporter tries recipes from fastest to safest and keeps the first whose similarities on a
calibration set (generated pictures x captions) stay within ``tolerance`` of the fp32 graph's:

    all   every MatMul (weights per output channel) except the final projection
    mlp   the MLP layers only (attention projections stay fp32)
    fc2   the second MLP layer only
    none  no quantization: the fp32 graph (ONNX Runtime's fused kernels)

The check runs on the real weights being exported, once; its result is cached with the model.

Weights use 7 bits (``reduce_range``): without AVX-VNNI, x86 int8 kernels multiply u8 x s8 pairs
into saturating 16-bit sums (``vpmaddubsw``), and full-range weights overflow them — measured on a
1600x768x3072 MatMul here: max error 10% of the output range with 8-bit weights, 2% with 7-bit,
same speed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RECIPES = ("all", "mlp", "fc2")
CALIBRATION_CAPTIONS = (
    "a photo of a dog", "a red circle on a white background", "a screenshot of a web page with text",
    "a landscape with mountains and a lake at sunset", "a portrait of a woman", "a blue car parked on a street",
    "a bowl of fruit on a table", "a logo", "a black and white drawing", "a small green star",
    "a city at night", "a close-up of a flower",
)


@dataclass
class QuantChoice:
    recipe: str  # all | mlp | fc2 | none
    max_diff: float  # max |sim_q - sim_fp32| on the calibration set
    tried: dict[str, float]


def _matmuls(path: Path) -> list[tuple[str, str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [(n.name, n.op_type) for n in graph.node if n.op_type in ("MatMul", "Gemm") and any(i in inits for i in n.input)]


def _excluded(names: list[str], recipe: str) -> list[str]:
    last = names[-1:]  # projection into the joint space: small, kept exact
    if recipe == "all":
        return last
    if recipe == "mlp":
        return last + [n for n in names if "/mlp/" not in n]
    if recipe == "fc2":
        return last + [n for n in names if not ("/mlp/" in n and "c_proj" in n)]
    raise ValueError(recipe)


def quantize_recipe(src: Path, dst: Path, recipe: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [n for n, _ in _matmuls(src)]
    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=_excluded(names, recipe),
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def calibration_images(preprocess: Callable, n: int = 16, seed: int = 0) -> np.ndarray:
    """Generated pictures (gradients, shapes, stripes, noise; JPEG round trip) through the model's preprocess."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = int(rng.integers(160, 320))
        a = np.linspace(0, 1, size, dtype=np.float32)
        base = np.add.outer(a * rng.uniform(-1, 1), a * rng.uniform(-1, 1))[..., None] * rng.uniform(60, 200, 3)
        base = base + rng.uniform(0, 255, 3)
        if i % 3 == 0:  # stripes / text-like texture
            base = base + 60 * (np.sin(np.arange(size) / rng.uniform(1.5, 6))[:, None, None] > 0.6)
        base = base + rng.normal(0, rng.uniform(2, 25), base.shape)
        im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 5))):
            x, y = rng.integers(0, size, 2)
            r = int(rng.integers(size // 12, size // 3))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)([x - r, y - r, x + r, y + r], fill=fill)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
        out.append(np.asarray(preprocess(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))))
    return np.stack(out).astype(np.float32)


def choose_and_quantize(
    fp32_image: Path, out_dir: Path, pixels: np.ndarray, text_emb: np.ndarray, tolerance: float, threads: int = 1,
) -> tuple[Path, QuantChoice]:
    """Try RECIPES in order; return the first within ``tolerance`` (or the fp32 graph)."""
    import onnxruntime as ort

    from clipcrawl.filters.clip.towers import l2_normalize

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads

    def sims(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return l2_normalize(sess.run(None, {"pixels": pixels})[0]) @ text_emb.T

    ref = sims(fp32_image)
    tried: dict[str, float] = {}
    for recipe in RECIPES:
        dst = out_dir / f"image.int8-{recipe}.onnx"
        quantize_recipe(fp32_image, dst, recipe)
        diff = float(np.abs(sims(dst) - ref).max())
        tried[recipe] = diff
        if diff <= tolerance:
            return dst, QuantChoice(recipe, diff, tried)
        dst.unlink()
    return fp32_image, QuantChoice("none", 0.0, tried)

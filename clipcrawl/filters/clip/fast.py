"""The fast CPU path (``precision="fast"``): ONNX Runtime, verified int8 image tower, cropped text.

* Image tower: exported once to ONNX and int8-quantized with the fastest recipe whose similarities
  stay within ``tolerance`` of fp32 on a calibration set (:mod:`clipcrawl.filters.clip.quantize`).
* Text tower: fp32 ONNX run on tokens cropped after the longest caption (exact: causal attention
  and end-of-text pooling), so a 12-token caption costs 13 positions instead of 77. Towers whose
  crop would change the result (SigLIP's bidirectional text tower read at the last position,
  HF text towers) get the full padded tokens.
* Threads: ``intra_op_num_threads`` = the torch thread count, spinning off (decode threads share
  the cores), one inter-op thread.

Models are cached under ``~/.cache/clipcrawl/onnx/<model>-<sha256 of name + every weight>/``
(``CLIPCRAWL_CACHE`` moves it), written under a temporary name and renamed, so concurrent
workers never read a partial file; ``choice.json`` records the recipe and its measured error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clipcrawl.base.progress import log
from clipcrawl.filters.clip.model import LoadedClip
from clipcrawl.filters.clip.towers import crop_tokens, l2_normalize, text_croppable

EXPORT_VERSION = "4"  # bump when the export or quantization recipe changes
DEFAULT_TOLERANCE = 0.006  # calibration budget; the promise is 0.01 on real data


def cache_root() -> Path:
    base = os.environ.get("CLIPCRAWL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "clipcrawl")
    return Path(base) / "onnx"


def weights_hash(clip: LoadedClip) -> str:
    """sha256 over the model name and every parameter/buffer (so random-init models never collide)."""
    h = hashlib.sha256(f"{EXPORT_VERSION}|{clip.name}".encode())
    for k, v in sorted(clip.model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:24]


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def build_onnx(clip: LoadedClip, quantize: str = "int8", tolerance: float = DEFAULT_TOLERANCE) -> tuple[Path, Path]:
    """Cached (image, text) ONNX paths for ``clip``; exports and quantizes on first use."""
    from clipcrawl.filters.clip.onnx_export import export_towers

    key = weights_hash(clip)
    d = cache_root() / f"{clip.name.replace('/', '_').replace(':', '_')}-{key}"
    choice_file = d / f"choice-{quantize}-{tolerance:g}.json"
    if choice_file.is_file():
        choice = json.loads(choice_file.read_text())
        paths = (d / choice["image"], d / "text.fp32.onnx")
        if all(p.is_file() for p in paths):
            return paths
    d.mkdir(parents=True, exist_ok=True)
    log.info("preparing the fast CPU path for %s in %s (once per model)", clip.name, d)
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        tmpd = Path(tmp)
        img32, txt32 = export_towers(clip, tmpd)
        choice: dict[str, Any] = {"image": img32.name, "recipe": "none", "max_diff": 0.0, "tried": {}}
        if quantize == "int8":
            from clipcrawl.filters.clip.quantize import (
                CALIBRATION_CAPTIONS,
                calibration_images,
                choose_and_quantize,
            )

            pixels = calibration_images(clip.preprocess)
            text = l2_normalize(_session(txt32, 1).run(None, {"tokens": _tokens(clip, list(CALIBRATION_CAPTIONS))})[0])
            img, qc = choose_and_quantize(img32, tmpd, pixels, text, tolerance)
            choice = {"image": img.name, "recipe": qc.recipe, "max_diff": qc.max_diff, "tried": qc.tried}
            log.info("fast path image tower: int8 recipe %s (calibration max |sim diff| %.4f; tried %s)",
                     qc.recipe, qc.max_diff, qc.tried)
        for name in {choice["image"], txt32.name, img32.name}:  # atomic publish
            src = tmpd / name
            if src.is_file():
                os.replace(src, d / name)
        tmp_choice = tmpd / choice_file.name
        tmp_choice.write_text(json.dumps(choice, indent=2))
        os.replace(tmp_choice, choice_file)
    return d / choice["image"], d / txt32.name


def _tokens(clip: LoadedClip, texts: list[str]) -> np.ndarray:
    t = clip.tokenizer(texts)
    t = crop_tokens(t) if text_croppable(clip.model) else t
    return np.ascontiguousarray(t.numpy(), dtype=np.int64)


class OnnxEncoder:
    """ONNX Runtime CPU encoder over the cached towers; same interface as TorchEncoder."""

    def __init__(self, clip: LoadedClip, quantize: str = "int8", threads: int | None = None,
                 tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.clip = clip
        img_path, txt_path = build_onnx(clip, quantize, tolerance)
        n = threads or _default_threads()
        self.image = _session(img_path, n)
        self.text = _session(txt_path, n)
        self.image_recipe = img_path.name
        self.crop = text_croppable(clip.model)

    def encode_images(self, pixels: Any) -> np.ndarray:
        x = pixels.numpy() if hasattr(pixels, "numpy") else np.asarray(pixels)
        return l2_normalize(self.image.run(None, {"pixels": np.ascontiguousarray(x, dtype=np.float32)})[0])

    def encode_texts(self, tokens: Any) -> np.ndarray:
        t = crop_tokens(tokens) if self.crop else tokens
        t = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
        return l2_normalize(self.text.run(None, {"tokens": np.ascontiguousarray(t, dtype=np.int64)})[0])


def _default_threads() -> int:
    try:
        import torch

        return max(1, torch.get_num_threads())
    except ImportError:  # pragma: no cover
        return os.cpu_count() or 1


def clear_cache() -> None:
    shutil.rmtree(cache_root(), ignore_errors=True)

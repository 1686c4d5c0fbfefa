"""Image/text encoders behind one interface: ``encode_images(pixels)`` / ``encode_texts(tokens)`` ->
L2-normalised float32 numpy arrays.

* :class:`TorchEncoder` — open_clip eager. ``fp32`` is the exact reference path (the model's own
  ``encode_image``/``encode_text``); ``fp16``/``bf16`` use autocast on a GPU.
* :class:`~clipcrawl.filters.clip.fast.OnnxEncoder` (``precision="fast"`` on CPU) lives in fast.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipcrawl.filters.clip.model import LoadedClip
from clipcrawl.filters.clip.towers import encode_text_cropped, text_croppable


class TorchEncoder:
    """open_clip eager on the loaded device; fp32 exact, fp16/bf16 autocast (GPU)."""

    def __init__(self, clip: LoadedClip, crop_text: bool = False) -> None:
        self.clip = clip
        self.crop_text = crop_text and text_croppable(clip.model)
        self.device = clip.device
        self.dtype = None
        if clip.precision in ("fp16", "bf16"):
            import torch

            self.dtype = torch.float16 if clip.precision == "fp16" else torch.bfloat16

    def _ctx(self) -> Any:
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        dev_type = self.device.split(":")[0]
        return torch.autocast(device_type=dev_type, dtype=self.dtype)

    def encode_images(self, pixels: Any) -> np.ndarray:
        import torch

        with torch.inference_mode(), self._ctx():
            feats = self.clip.model.encode_image(pixels.to(self.device, non_blocking=True))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy()

    def encode_texts(self, tokens: Any) -> np.ndarray:
        import torch

        with torch.inference_mode(), self._ctx():
            tokens = tokens.to(self.device, non_blocking=True)
            if self.crop_text:
                feats = encode_text_cropped(self.clip.model, tokens)
            else:
                feats = self.clip.model.encode_text(tokens)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy()


def make_encoder(clip: LoadedClip, **kwargs: Any) -> Any:
    """The encoder for ``clip.precision``: fast -> ONNX Runtime (CPU), else open_clip eager; the
    shipped tiny model without torch -> its ONNX graphs (:mod:`clipcrawl.filters.clip.light`)."""
    from clipcrawl.filters.clip.light import TinyOnnxEncoder, TinyOnnxModel

    if isinstance(clip.model, TinyOnnxModel):
        return TinyOnnxEncoder(clip.model)
    if clip.precision == "fast" and clip.device == "cpu":
        from clipcrawl.filters.clip.fast import OnnxEncoder

        return OnnxEncoder(clip, **kwargs)
    return TorchEncoder(clip, crop_text=clip.precision != "fp32")

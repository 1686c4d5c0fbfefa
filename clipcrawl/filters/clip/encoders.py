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


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def crop_tokens(tokens: Any) -> Any:
    """Drop the padding after the longest caption's end-of-text token (argmax: it has the highest id).

    The text transformer's attention is causal and the feature is read at that token, so outputs
    are unchanged while the work shrinks from 77 positions to the caption length.
    """
    if tokens.shape[1] == 0:
        return tokens
    return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]


def encode_text_cropped(model: Any, tokens: Any, crop: bool = True) -> Any:
    """``CLIP.encode_text`` on cropped tokens (slices the positional embedding and causal mask).

    ``crop=False``: the tokens are already cropped (the ONNX export, where the crop length must
    stay dynamic and is done outside the graph).
    """
    from open_clip.transformer import text_global_pool

    if crop:
        tokens = crop_tokens(tokens)
    if hasattr(model, "text") and not hasattr(model, "token_embedding"):  # CustomTextCLIP slices itself
        return model.encode_text(tokens)
    n = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    mask = model.attn_mask[:n, :n] if model.attn_mask is not None else None
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, __import__("torch").nn.Linear) else x @ proj
    return x


def _text_croppable(model: Any) -> bool:
    """Cropping is exact only for causal argmax/last-token pooling (the CLIP text tower)."""
    return (
        hasattr(model, "token_embedding")
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "argmax") == "argmax"
    )


class TorchEncoder:
    """open_clip eager on the loaded device; fp32 exact, fp16/bf16 autocast (GPU)."""

    def __init__(self, clip: LoadedClip, crop_text: bool = False) -> None:
        self.clip = clip
        self.crop_text = crop_text and _text_croppable(clip.model)
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
    """The encoder for ``clip.precision``: fast -> ONNX Runtime (CPU), else open_clip eager."""
    if clip.precision == "fast" and clip.device == "cpu":
        from clipcrawl.filters.clip.fast import OnnxEncoder

        return OnnxEncoder(clip, **kwargs)
    return TorchEncoder(clip, crop_text=clip.precision != "fp32")

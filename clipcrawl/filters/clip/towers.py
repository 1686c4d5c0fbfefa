"""Tower arithmetic shared by every encoder: L2 normalisation and the exact cropped text tower."""

from __future__ import annotations

from typing import Any

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def crop_tokens(tokens: Any) -> Any:
    """Drop the padding after the longest caption's end-of-text token (argmax: it has the highest id).

    The text transformer's attention is causal and the feature is read at that token, so outputs
    are unchanged while the work shrinks from 77 positions to the caption length.
    """
    if tokens.shape[1] == 0 or tokens.shape[0] == 0:
        return tokens
    if isinstance(tokens, np.ndarray):  # the tokenizer of the core install (no torch)
        return tokens[:, : int(tokens.argmax(axis=-1).max()) + 1]
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


def text_croppable(model: Any) -> bool:
    """Cropping is exact only for causal argmax/last-token pooling (the CLIP text tower)."""
    return (
        hasattr(model, "token_embedding")
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "argmax") == "argmax"
    )

"""Export open_clip's two towers to ONNX with dynamic batch (and text length) axes.

``nn.MultiheadAttention`` traces with its shapes baked in (and its fused fast path has no ONNX
symbolic), so a copy of the model gets an equivalent self-attention written with shape-agnostic
ops; the live model is never modified. The text tower is exported on already-cropped tokens
(see :func:`~clipcrawl.filters.clip.encoders.crop_tokens`): cropping happens outside the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipcrawl.filters.clip.model import LoadedClip

OPSET = 17


def _export_attention_module() -> Any:
    import torch
    import torch.nn.functional as F

    class ExportAttention(torch.nn.Module):
        """``nn.MultiheadAttention`` (self-attention, batch-first) rewritten with shape-agnostic ops so
        the traced ONNX graph keeps batch and length dynamic; same weights, same math."""

        def __init__(self, mha: torch.nn.MultiheadAttention) -> None:
            super().__init__()
            self.mha = mha
            self.heads = mha.num_heads
            self.head_dim = mha.embed_dim // mha.num_heads

        def forward(self, q, k=None, v=None, need_weights=False, attn_mask=None):  # noqa: ANN001
            m = self.mha
            x = q if m.batch_first else q.transpose(0, 1)
            qkv = F.linear(x, m.in_proj_weight, m.in_proj_bias)
            qq, kk, vv = (t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
            out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=attn_mask)
            out = m.out_proj(out.transpose(1, 2).flatten(-2))
            return (out if m.batch_first else out.transpose(0, 1)), None

    return ExportAttention


def _exportable_copy(model: Any) -> Any:
    """A copy of ``model`` whose self-attention modules trace with dynamic shapes."""
    import copy

    import torch

    model = copy.deepcopy(model).float().cpu().eval()
    attn_cls = _export_attention_module()
    for mod in list(model.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.MultiheadAttention) and child._qkv_same_embed_dim:
                setattr(mod, name, attn_cls(child))
    return model


def export_towers(clip: LoadedClip, out_dir: Path) -> tuple[Path, Path]:
    """Export the two towers to fp32 ONNX in ``out_dir``; returns (image, text) paths."""
    import torch

    from clipcrawl.filters.clip.towers import encode_text_cropped, text_croppable

    model = _exportable_copy(clip.model)

    class Image(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m.encode_image(x)

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return encode_text_cropped(self.m, t, crop=False) if croppable else self.m.encode_text(t)

    croppable = text_croppable(clip.model)
    size = image_size(clip)
    x = torch.randn(2, 3, size[0], size[1])
    t = clip.tokenizer(["a photo of a cat", "a red circle on a white background"])
    if croppable:
        t = t[:, : int(t.argmax(dim=-1).max()) + 1]
    img_path, txt_path = out_dir / "image.fp32.onnx", out_dir / "text.fp32.onnx"
    _export_towers(Image(), Text(), x, t, img_path, txt_path)
    return img_path, txt_path


def _export_towers(image: Any, text: Any, x: Any, t: Any, img_path: Path, txt_path: Path) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            image, (x,), str(img_path), input_names=["pixels"], output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
        torch.onnx.export(
            text, (t,), str(txt_path), input_names=["tokens"], output_names=["features"],
            dynamic_axes={"tokens": {0: "batch", 1: "length"}, "features": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )


def image_size(clip: LoadedClip) -> tuple[int, int]:
    size = getattr(clip.model.visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

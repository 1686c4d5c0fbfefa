"""User-supplied safety heads: a LAION-style linear or MLP classifier on CLIP image embeddings.

By default ``punsafe``/``pwatermark`` are **zero-shot** prompt scores (:mod:`.zeroshot`): uncalibrated
(with the shipped tiny model they are noise), recorded for inspection and never used to filter.
A trained head from a local path replaces the zero-shot score of its column
(``ClipConfig.unsafe_head`` / ``watermark_head``).

Checkpoint formats (nothing is downloaded): a torch ``state_dict`` (``.pt``/``.pth``/``.bin``, loaded with
``weights_only=True``), a ``.safetensors`` file, or a numpy ``.npz``. The layers are the 2-D ``*weight``
tensors in file order, each with its ``*bias`` when present (``nn.Linear`` / ``nn.Sequential`` of Linear +
ReLU, as LAION's CLIP-based NSFW and aesthetic heads). Hidden layers use ReLU. The output is one logit
(sigmoid) or two (softmax; the second class is "unsafe"/"watermark"). The head gets the L2-normalised
image embedding (``normalize: false`` in :func:`load_head` for heads trained on raw ones); its input width
must equal the CLIP model's embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcrawl.schemas.configbase import ConfigError


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConfigError(f"safety head {path}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    return {k: v.detach().float().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


@dataclass
class SafetyHead:
    column: str
    path: str
    layers: list[tuple[np.ndarray, np.ndarray | None]]  # (out x in weight, bias)
    normalize: bool = True

    @property
    def in_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    def probabilities(self, image_emb: np.ndarray, logit_scale: float = 0.0) -> np.ndarray:  # noqa: ARG002
        """(N, D) image embeddings -> (N,) float32 probability of the positive class."""
        if len(image_emb) == 0:
            return np.zeros(0, dtype=np.float32)
        x = image_emb.astype(np.float32)
        if self.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + (b if b is not None else 0.0)
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        if x.shape[1] == 1:
            return (1.0 / (1.0 + np.exp(-x[:, 0]))).astype(np.float32)
        x = x - x.max(axis=1, keepdims=True)
        p = np.exp(x)
        return (p[:, -1] / p.sum(axis=1)).astype(np.float32)


def load_head(path: str | Path, column: str, embed_dim: int | None = None, normalize: bool = True) -> SafetyHead:
    """Load a head checkpoint from a local path; ConfigError when it is missing or does not fit."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"safety head for {column}: {p} not found (fix: a local .pt/.safetensors/.npz file)")
    tensors = _read_tensors(p)
    layers: list[tuple[np.ndarray, np.ndarray | None]] = []
    for name, w in tensors.items():
        if name.endswith("weight") and w.ndim == 2:
            bias = tensors.get(name[: -len("weight")] + "bias")
            layers.append((w.astype(np.float32), None if bias is None else bias.astype(np.float32).reshape(-1)))
    if not layers:
        raise ConfigError(f"safety head {p}: no 2-D '*weight' tensors (fix: save nn.Linear/nn.Sequential state_dict)")
    for (w0, _), (w1, _) in zip(layers, layers[1:]):
        if w1.shape[1] != w0.shape[0]:
            raise ConfigError(f"safety head {p}: layer shapes {w0.shape} -> {w1.shape} do not chain")
    if layers[-1][0].shape[0] not in (1, 2):
        raise ConfigError(f"safety head {p}: {layers[-1][0].shape[0]} outputs; expected 1 (sigmoid) or 2 (softmax)")
    head = SafetyHead(column, str(p), layers, normalize)
    if embed_dim is not None and head.in_dim != embed_dim:
        raise ConfigError(f"safety head {p}: takes {head.in_dim}-d embeddings but the CLIP model gives {embed_dim}-d "
                          "(fix: use the head trained for this CLIP model)")
    return head

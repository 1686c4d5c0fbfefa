"""User-supplied heads on CLIP image embeddings: LAION's NSFW detector, LAION's aesthetic predictor, generic ones.

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

Published heads are recognised by their state-dict keys (``SafetyHead.format`` names which one):

``laion-aesthetic-mlp``
    christophschuhmann/improved-aesthetic-predictor (``simple_inference.py``'s ``MLP``; NeMo Curator's
    ``AestheticClassifier`` loads ``sac+logos+ava1-l14-linearMSE.pth`` into it): ``nn.Sequential`` of
    Linear(768,1024), Dropout, Linear(1024,128), Dropout, Linear(128,64), Dropout, Linear(64,16),
    Linear(16,1), keys ``layers.{0,2,4,6,7}.{weight,bias}``. **No activations** (the ReLUs are commented out:
    the stack is linear, trained with MSE); the output is the raw 1-10 rating; input: the L2-normalised
    ViT-L/14 image embedding.
``laion-aesthetic-linear``
    LAION-AI/aesthetic-predictor's v1 head (``sa_0_4_vit_l_14_linear.pth``): one ``nn.Linear(768, 1)``, keys
    ``weight``/``bias``; raw rating, normalised input. (A bare ``weight``/``bias`` file is read as this form
    only for the ``aesthetic`` column; for ``punsafe`` it stays a one-logit sigmoid head.)
``laion-nsfw-keras``
    LAION-AI/CLIP-based-NSFW-Detector's Keras (AutoKeras) model after its own conversion to torch
    (``convert_heads_to_pytorch.py`` -> ``models/clip_ViT-L-14_openai_binary_nsfw_head.pth``, ``src/models.py``
    ``NSFWModel_L14``/``_B32``): keys ``norm.mean``, ``norm.variance`` (Keras' Normalization layer),
    ``linear_1..N.{weight,bias}``; ``(x - mean) / (sqrt(variance) + 1e-10)``, ReLU after every hidden layer,
    sigmoid output (1 = NSFW); input: the L2-normalised embedding.
``laion-nsfw-h14``
    The same repo's ViT-H/14 detector as NeMo Curator's ``NsfwClassifier`` loads it (``h14_nsfw.pth``,
    ``H14_NSFW_Detector``): keys ``layers.{0,3,6,9,12,15,16}``, ReLU after the first five Linears, none after
    ``layers.15``, the raw output is the score (NeMo applies no sigmoid; neither do we).
``generic``
    Anything else: the rule of the paragraph above.
"""

from __future__ import annotations

import re
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


#: Sequential indices of the Linear layers of the known ``layers.N`` layouts -> (format, ReLU after layer i?, output)
_SEQUENTIAL_LAYOUTS: dict[tuple[int, ...], tuple[str, tuple[bool, ...], str]] = {
    (0, 2, 4, 6, 7): ("laion-aesthetic-mlp", (False,) * 5, "raw"),
    (0, 3, 6, 9, 12, 15, 16): ("laion-nsfw-h14", (True,) * 5 + (False, False), "raw"),
}


@dataclass
class SafetyHead:
    column: str
    path: str
    layers: list[tuple[np.ndarray, np.ndarray | None]]  # (out x in weight, bias)
    normalize: bool = True
    format: str = "generic"
    #: ReLU after layer i (None: the generic rule, every hidden layer)
    relu: tuple[bool, ...] | None = None
    #: "auto": sigmoid for one output, softmax (last class) for two; "sigmoid"; "raw" (the output as is)
    output: str = "auto"
    #: Keras Normalization before the first layer: (mean, variance)
    norm: tuple[np.ndarray, np.ndarray] | None = None

    def describe(self) -> str:
        """``FILE (format)``: what the card and the report say produced a column."""
        return f"{Path(self.path).name} ({self.format})"

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
        if self.norm is not None:
            mean, var = self.norm
            x = (x - mean) / (np.sqrt(var) + np.float32(1e-10))
        relu = self.relu if self.relu is not None else tuple(i < len(self.layers) - 1 for i in range(len(self.layers)))
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + (b if b is not None else 0.0)
            if relu[i]:
                x = np.maximum(x, 0.0)
        if self.output == "raw":
            return x[:, 0].astype(np.float32)
        if x.shape[1] == 1 or self.output == "sigmoid":
            return (1.0 / (1.0 + np.exp(-x[:, 0]))).astype(np.float32)
        x = x - x.max(axis=1, keepdims=True)
        p = np.exp(x)
        return (p[:, -1] / p.sum(axis=1)).astype(np.float32)

    predict = probabilities  # the aesthetic head's output is a rating, not a probability


def _known_layout(tensors: dict[str, np.ndarray], column: str) -> SafetyHead | None:
    """The published heads of the module docstring, by their keys; None for anything else."""
    f32 = np.float32
    if "norm.mean" in tensors and "norm.variance" in tensors and "linear_1.weight" in tensors:
        n = 1
        layers = []
        while f"linear_{n}.weight" in tensors:
            b = tensors.get(f"linear_{n}.bias")
            layers.append((tensors[f"linear_{n}.weight"].astype(f32), None if b is None else b.astype(f32).reshape(-1)))
            n += 1
        norm = (tensors["norm.mean"].astype(f32).reshape(-1), tensors["norm.variance"].astype(f32).reshape(-1))
        relu = tuple(i < len(layers) - 1 for i in range(len(layers)))
        return SafetyHead(column, "", layers, True, "laion-nsfw-keras", relu, "sigmoid", norm)
    idx = sorted(int(m.group(1)) for k in tensors if (m := re.fullmatch(r"layers\.(\d+)\.weight", k)))
    if idx and len(idx) == sum(1 for k in tensors if k.endswith("weight")) and tuple(idx) in _SEQUENTIAL_LAYOUTS:
        fmt, relu, output = _SEQUENTIAL_LAYOUTS[tuple(idx)]
        layers = []
        for i in idx:
            b = tensors.get(f"layers.{i}.bias")
            layers.append((tensors[f"layers.{i}.weight"].astype(f32), None if b is None else b.astype(f32).reshape(-1)))
        return SafetyHead(column, "", layers, True, fmt, relu, output)
    if column == "aesthetic" and set(tensors) <= {"weight", "bias"} and tensors.get("weight", np.zeros((0, 0))).shape[:1] == (1,):
        b = tensors.get("bias")
        layers = [(tensors["weight"].astype(f32), None if b is None else b.astype(f32).reshape(-1))]
        return SafetyHead(column, "", layers, True, "laion-aesthetic-linear", (False,), "raw")
    return None


def load_head(path: str | Path, column: str, embed_dim: int | None = None, normalize: bool = True) -> SafetyHead:
    """Load a head checkpoint from a local path; ConfigError when it is missing or does not fit."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"safety head for {column}: {p} not found (fix: a local .pt/.safetensors/.npz file)")
    tensors = _read_tensors(p)
    known = _known_layout(tensors, column)
    if known is not None:
        known.path, known.normalize = str(p), normalize
        return _check_head(known, p, embed_dim)
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
    return _check_head(SafetyHead(column, str(p), layers, normalize), p, embed_dim)


def _check_head(head: SafetyHead, p: Path, embed_dim: int | None) -> SafetyHead:
    layers = head.layers
    for (w0, _), (w1, _) in zip(layers, layers[1:]):
        if w1.shape[1] != w0.shape[0]:
            raise ConfigError(f"head {p} ({head.format}): layer shapes {w0.shape} -> {w1.shape} do not chain")
    if head.norm is not None and any(v.shape != (head.in_dim,) for v in head.norm):
        raise ConfigError(f"head {p} ({head.format}): norm.mean/variance do not match its {head.in_dim}-d input")
    if embed_dim is not None and head.in_dim != embed_dim:
        raise ConfigError(f"safety head {p}: takes {head.in_dim}-d embeddings but the CLIP model gives {embed_dim}-d "
                          "(fix: use the head trained for this CLIP model)")
    return head

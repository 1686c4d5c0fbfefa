"""Load an open_clip model: a name + pretrained tag, ``hf-hub:org/repo``, a local checkpoint, or the shipped tiny one.

Weights are looked up in the local caches first; the network is only tried when the caches miss,
the hub is not in offline mode (``HF_HUB_OFFLINE=1``) and ``CLIPCRAWL_OFFLINE`` is unset. Whatever goes
wrong while fetching becomes one :class:`ClipWeightsUnavailable` line that says how to pass a local
checkpoint or use ``--model tiny``; the CLI exits with code 2 on it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcrawl.base.progress import log
from clipcrawl.schemas.config import ConfigError

TINY_DIR = Path(__file__).resolve().parents[2] / "assets" / "tiny_clip"
TINY_NAME = "clipcrawl-tiny"
TINY_ALIASES = ("tiny", TINY_NAME)
_PRECISIONS = ("auto", "fp32", "fp16", "bf16", "fast")


class ClipWeightsUnavailable(ConfigError):
    """The weights cannot be found locally or fetched (offline). One line, exit code 2."""


def offline_hint(what: str, reason: str) -> str:
    reason = " ".join(str(reason).split())[:200]
    return (
        f"cannot load CLIP weights {what}: {reason}. No network? Pass a local checkpoint, e.g. "
        "--model ViT-B-32 --pretrained /path/to/open_clip_pytorch_model.bin, or use the shipped test model with --model tiny"
    )


@dataclass
class LoadedClip:
    """A ready model: ``model`` in eval mode on ``device``; ``precision`` is the resolved one."""

    model: Any  # open_clip CLIP
    preprocess: Any  # PIL image -> tensor (the model's own eval transform)
    tokenizer: Any  # list[str] -> LongTensor
    device: str
    precision: str  # fp32 | fp16 | bf16 | fast
    name: str  # "<model>/<pretrained>" as stored in clip_model
    weights_id: str  # stable id of the weights (for caches keyed by model+weights)
    embed_dim: int


def is_offline() -> bool:
    truthy = ("1", "true", "yes", "on")
    return any(os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", "CLIPCRAWL_OFFLINE"))


def resolve_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available (fix: --device cpu or auto)")
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """auto -> fast on CPU, fp16 on GPU. ``fast`` on a GPU means fp16 autocast."""
    if precision not in _PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(_PRECISIONS)}")
    on_cpu = device == "cpu"
    if precision == "auto":
        return "fast" if on_cpu else "fp16"
    if on_cpu and precision in ("fp16", "bf16"):
        log.warning("precision %s on CPU is slow and approximate; use fast or fp32", precision)
    if not on_cpu and precision == "fast":
        return "fp16"
    return precision


def register_tiny() -> None:
    import open_clip

    if TINY_NAME not in open_clip.list_models():
        open_clip.add_model_config(TINY_DIR / f"{TINY_NAME}.json")


def tiny_checkpoint() -> Path:
    return TINY_DIR / f"{TINY_NAME}.safetensors"


def load_clip(
    model: str = "ViT-B-32",
    pretrained: str | None = "openai",
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
) -> LoadedClip:
    """Create model, preprocess and tokenizer; raise ClipWeightsUnavailable / ConfigError on bad input.

    Without torch/open_clip (a core install) the shipped tiny model runs on ONNX Runtime
    (:mod:`clipcrawl.filters.clip.light`); any other model is a ConfigError naming the ``[clip]`` extra."""
    if use_light_tiny(model):
        return _load_light(model, device, precision)
    require_torch_clip(model)
    from clipcrawl.base.workers import passive_openmp

    passive_openmp()  # before torch loads its OpenMP runtime (a Ray actor, a library caller)
    import open_clip

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    kwargs: dict[str, Any] = {}
    if model in TINY_ALIASES:
        register_tiny()
        arch, ckpt, name = TINY_NAME, str(tiny_checkpoint()), TINY_NAME
    elif model.startswith("hf-hub:"):
        arch, ckpt, name = _resolve_hf_hub(model[len("hf-hub:") :], cache_dir), None, model
    elif model.startswith("local-dir:"):
        arch, ckpt, name = model, None, model
    else:
        arch, ckpt, kwargs = _resolve_named(model, pretrained, cache_dir)
        name = f"{model}/{pretrained}" if pretrained else model
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=ckpt, device=dev, cache_dir=cache_dir, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    except ClipWeightsUnavailable:
        raise
    except (OSError, RuntimeError, ValueError) as e:
        if _looks_like_network(e):
            raise ClipWeightsUnavailable(offline_hint(repr(name), e)) from None
        raise ConfigError(f"cannot load CLIP model {name!r}: {' '.join(str(e).split())[:300]}") from None
    net.eval()
    if net.logit_scale is not None:
        net.logit_scale.requires_grad_(False)
    for p in net.parameters():
        p.requires_grad_(False)
    embed_dim = int(net.text_projection.shape[1]) if getattr(net, "text_projection", None) is not None else 0
    embed_dim = embed_dim or int(net.encode_text(tokenizer(["a"]).to(dev)).shape[-1])
    return LoadedClip(net, preprocess, tokenizer, dev, prec, name, _weights_id(name, ckpt), embed_dim)


# ---------------------------------------------------------------- core install (no torch)
CLIP_EXTRA_HINT = 'pip install "clipcrawl[clip]"'


def torch_clip_installed() -> bool:
    """torch and open_clip are importable (looked up, not imported: importing torch takes seconds)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "open_clip"))


def use_light_tiny(model: str) -> bool:
    """The shipped tiny model on ONNX Runtime: when torch/open_clip are absent, or
    ``CLIPCRAWL_TINY_BACKEND=onnx`` (``torch`` forces open_clip)."""
    if model not in TINY_ALIASES:
        return False
    backend = os.environ.get("CLIPCRAWL_TINY_BACKEND", "").lower()
    if backend == "torch":
        return False
    return backend == "onnx" or not torch_clip_installed()


def require_torch_clip(model: str) -> None:
    """ConfigError (exit 2) when ``model`` needs torch/open_clip and they are not installed."""
    if model in TINY_ALIASES and os.environ.get("CLIPCRAWL_TINY_BACKEND", "").lower() != "torch":
        return
    if not torch_clip_installed():
        raise ConfigError(
            f"CLIP model {model!r} needs PyTorch and open_clip, which the core install leaves out "
            f"(fix: {CLIP_EXTRA_HINT}; without it only the shipped test model runs: --model tiny)"
        )


def _load_light(model: str, device: str, precision: str) -> LoadedClip:
    from clipcrawl.filters.clip.light import available, load_light_tiny

    if precision not in _PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(_PRECISIONS)}")
    if device not in ("auto", "cpu"):
        raise ConfigError(f"device {device!r} needs PyTorch (the core install runs the tiny model on the CPU "
                          f"with ONNX Runtime; fix: --device cpu, or {CLIP_EXTRA_HINT})")
    if not available():
        raise ConfigError(f"the tiny model's ONNX graphs or onnxruntime are missing (fix: pip install onnxruntime, "
                          f"or {CLIP_EXTRA_HINT})")
    if precision in ("fp16", "bf16"):
        log.info("tiny model on ONNX Runtime: precision %s runs as fp32 (no torch)", precision)
    return load_light_tiny()


# ---------------------------------------------------------------- resolution
def _resolve_named(model: str, pretrained: str | None, cache_dir: str | None) -> tuple[str, str | None, dict[str, Any]]:
    """Built-in name + tag / file. Returns (arch, checkpoint path or None, extra create kwargs)."""
    import open_clip

    kwargs: dict[str, Any] = {}
    if pretrained and (Path(pretrained).exists() or "/" in pretrained or pretrained.endswith((".pt", ".bin", ".pth", ".safetensors"))):
        p = Path(pretrained).expanduser()
        if not p.exists():
            raise ConfigError(f"--pretrained {pretrained}: file not found (fix: give the path of an open_clip checkpoint)")
        if p.is_dir():
            return f"local-dir:{p}", None, kwargs
        arch = model if model.replace("/", "-") in open_clip.list_models() else _config_beside(p, model)
        return arch, str(p), kwargs
    if model.replace("/", "-") not in open_clip.list_models():
        raise ConfigError(
            f"unknown CLIP model {model!r} (fix: an open_clip name such as ViT-B-32, hf-hub:org/repo, or tiny)"
        )
    if not pretrained:
        log.warning("CLIP model %s without pretrained weights: random init (only useful for benchmarks)", model)
        return model, None, kwargs
    tag_cfg = open_clip.get_pretrained_cfg(model.replace("/", "-"), pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model.replace("/", "-"))
        raise ConfigError(
            f"--pretrained {pretrained!r} is neither a file nor a tag of {model} (tags: {', '.join(tags) or 'none'})"
        )
    path = _fetch_tag(tag_cfg, f"{model}/{pretrained}", cache_dir)
    # a tag carries its own preprocessing and activation; keep them when loading the file
    pre = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    kwargs = {"force_quick_gelu": bool(tag_cfg.get("quick_gelu", False))}
    if pre:
        kwargs["force_preprocess_cfg"] = pre
    return model, path, kwargs


def _config_beside(ckpt: Path, model: str) -> str:
    """An unknown model name + a checkpoint: use a config JSON next to the file."""
    import open_clip

    for cand in (ckpt.with_suffix(".json"), ckpt.parent / f"{model}.json", ckpt.parent / "open_clip_config.json"):
        if not cand.is_file():
            continue
        data = json.loads(cand.read_text(encoding="utf-8"))
        if "model_cfg" in data:  # HF-style open_clip_config.json: a local-dir model
            raise ConfigError(
                f"{cand} is an HF-style config: pass the folder instead (--pretrained {ckpt.parent})"
            )
        if all(k in data for k in ("embed_dim", "vision_cfg", "text_cfg")):
            open_clip.add_model_config(cand)
            return cand.stem
    raise ConfigError(
        f"unknown CLIP model {model!r} and no model config JSON beside {ckpt} "
        "(fix: pass a known --model such as ViT-B-32, or put <name>.json in open_clip's model_configs format next to it)"
    )


def _fetch_tag(tag_cfg: dict[str, Any], what: str, cache_dir: str | None) -> str:
    """The checkpoint file of a pretrained tag: cache first, network only when allowed."""
    from open_clip import pretrained as ocp

    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        cached = _hf_cached(repo, names, cache_dir)
        if cached:
            return cached
    elif tag_cfg.get("url"):
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(tag_cfg["url"])
        if target.is_file():
            return str(target)
    if is_offline():
        raise ClipWeightsUnavailable(offline_hint(repr(what), "not in the local cache and offline mode is on"))
    _require_network(_hf_endpoint() if hub else tag_cfg.get("url", ""), what)
    try:
        return ocp.download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - any fetch failure becomes one line
        raise ClipWeightsUnavailable(offline_hint(repr(what), e)) from None


def _hf_cached(repo: str, names: list[str], cache_dir: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fn in names:
        hit = try_to_load_from_cache(repo, fn, cache_dir=cache_dir)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _resolve_hf_hub(repo: str, cache_dir: str | None) -> str:
    """``hf-hub:org/repo`` -> ``local-dir:`` of its cached snapshot, downloading config + weights if allowed."""
    names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    cfg = _hf_cached(repo, ["open_clip_config.json"], cache_dir)
    weights = _hf_cached(repo, names, cache_dir)
    if cfg and weights and Path(cfg).parent == Path(weights).parent:
        return f"local-dir:{Path(cfg).parent}"
    if is_offline():
        raise ClipWeightsUnavailable(offline_hint(f"'hf-hub:{repo}'", "not in the local cache and offline mode is on"))
    _require_network(_hf_endpoint(), f"hf-hub:{repo}")
    try:
        from open_clip.pretrained import download_pretrained_from_hf

        cfg = download_pretrained_from_hf(repo, filename="open_clip_config.json", cache_dir=cache_dir)
        weights = download_pretrained_from_hf(repo, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001
        raise ClipWeightsUnavailable(offline_hint(f"'hf-hub:{repo}'", e)) from None
    if Path(cfg).parent != Path(weights).parent:  # pragma: no cover - same snapshot in practice
        raise ConfigError(f"hf-hub:{repo}: config and weights resolved to different folders")
    return f"local-dir:{Path(cfg).parent}"


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _require_network(url: str, what: str, timeout: float = 3.0) -> None:
    """One TCP connect (to the proxy if one is set) before handing over to the hub client, whose
    retries with back-off would otherwise spend minutes on a machine without network."""
    import socket
    from urllib.parse import urlsplit

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    target = urlsplit(proxy if proxy else url)
    host = target.hostname
    if not host:
        return
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ClipWeightsUnavailable(offline_hint(repr(what), f"{host}:{port} unreachable ({e})")) from None


def _looks_like_network(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(w in text for w in ("download", "connection", "offline", "resolve", "timed out", "network", "hub"))


def _weights_id(name: str, ckpt: str | None) -> str:
    """A stable identifier of the weights: path + size + mtime for files, the name otherwise."""
    if ckpt and os.path.isfile(ckpt):
        st = os.stat(ckpt)
        return f"{name}|{os.path.realpath(ckpt)}|{st.st_size}|{int(st.st_mtime)}"
    return name

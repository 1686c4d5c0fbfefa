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
    #: SigLIP-style sigmoid pairs: the model's own ``logit_bias`` (None for softmax CLIP models); with
    #: ``logit_scale`` (already exponentiated) it gives ``clip_sigmoid`` = sigmoid(scale * cosine + bias)
    logit_bias: float | None = None
    logit_scale: float = 100.0

    def sigmoid(self, cosine: Any) -> Any:
        """The model's calibrated pair probability for cosines (numpy); None when not a sigmoid model."""
        import numpy as np

        if self.logit_bias is None:
            return None
        z = np.asarray(cosine, dtype=np.float64) * self.logit_scale + self.logit_bias
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


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
    tokenizer: str | None = None,
) -> LoadedClip:
    """Create model, preprocess and tokenizer; raise ClipWeightsUnavailable / ConfigError on bad input.

    ``tokenizer``: a local tokenizer folder (HF ``tokenizer.json``/``spiece.model``..., or a CLIP BPE
    ``*.txt.gz``) or name that replaces the architecture's own (which, for SigLIP / MetaCLIP 2 / other
    HF tokenizers, downloads with the weights; offline and not cached is a ClipWeightsUnavailable).

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
        tok = make_tokenizer(arch, tokenizer, cache_dir)  # before the weights: a missing tokenizer fails fast
        net, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=ckpt, device=dev, cache_dir=cache_dir, **kwargs
        )
    except (ClipWeightsUnavailable, ConfigError):
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
    embed_dim = embed_dim or int(net.encode_text(tok(["a"]).to(dev)).shape[-1])
    bias = getattr(net, "logit_bias", None)
    scale = getattr(net, "logit_scale", None)
    return LoadedClip(net, preprocess, tok, dev, prec, name, _weights_id(name, ckpt), embed_dim,
                      logit_bias=float(bias.item()) if bias is not None else None,
                      logit_scale=float(scale.exp().item()) if scale is not None else 100.0)


# ---------------------------------------------------------------- tokenizers
_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "sentencepiece.bpe.model",
                       "vocab.txt", "vocab.json")
HF_TOKENIZER_HINT = 'pip install "clipcrawl[clip-hf]"'


def text_config(arch: str) -> dict[str, Any]:
    """The text tower's config of an open_clip arch name or ``local-dir:`` folder ({} when unknown)."""
    import open_clip

    if arch.startswith("local-dir:"):
        f = Path(arch[len("local-dir:") :]) / "open_clip_config.json"
        try:
            return dict(json.loads(f.read_text(encoding="utf-8")).get("model_cfg", {}).get("text_cfg", {}))
        except (OSError, ValueError):
            return {}
    return dict((open_clip.get_model_config(arch) or {}).get("text_cfg", {}))


def _has_hf_tokenizer(d: Path) -> bool:
    return d.is_dir() and any((d / f).is_file() for f in _HF_TOKENIZER_FILES)


def make_tokenizer(arch: str, override: str | None = None, cache_dir: str | None = None) -> Any:
    """The tokenizer of ``arch`` (open_clip's choice), or ``override``: a local folder (HF files or a
    CLIP BPE ``*.txt.gz``), an HF hub tokenizer name, or another open_clip model's name. HF tokenizers
    are taken from the local cache first; offline and not cached is one ClipWeightsUnavailable line."""
    import open_clip

    tcfg = text_config(arch)
    ctx = int(tcfg.get("context_length", 77))
    kwargs = dict(tcfg.get("tokenizer_kwargs", {}))
    source: str | None = None
    if override:
        d = Path(override).expanduser()
        if d.is_dir():
            bpe = sorted(d.glob("*.txt.gz"))
            if bpe and not _has_hf_tokenizer(d):
                return open_clip.SimpleTokenizer(bpe_path=str(bpe[0]), context_length=ctx)
            if not _has_hf_tokenizer(d):
                raise ConfigError(f"--tokenizer {override}: no tokenizer files in that folder (fix: a folder saved "
                                  f"with tokenizer.save_pretrained(), or one holding a CLIP BPE vocabulary *.txt.gz)")
            source = str(d)
        elif override.replace("/", "-") in open_clip.list_models():
            return open_clip.get_tokenizer(override.replace("/", "-"), context_length=ctx, cache_dir=cache_dir)
        elif "/" in override and not override.startswith((".", "/", "~")):
            source = override  # an HF hub tokenizer
        else:
            raise ConfigError(f"--tokenizer {override}: not a folder, an HF hub name (org/name) nor an open_clip model")
    else:
        hf_name = tcfg.get("hf_tokenizer_name", "")
        if not hf_name:
            return open_clip.get_tokenizer(arch, cache_dir=cache_dir)  # CLIP's BPE: shipped inside open_clip
        local = Path(arch[len("local-dir:") :]) if arch.startswith("local-dir:") else None
        source = str(local) if local is not None and _has_hf_tokenizer(local) else hf_name
    return _hf_tokenizer(source, arch, ctx, kwargs, tcfg.get("tokenizer_mode"), cache_dir)


def _hf_tokenizer(source: str, arch: str, ctx: int, kwargs: dict[str, Any], mode: str | None,
                  cache_dir: str | None) -> Any:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise ConfigError(f"the tokenizer of {arch} ({source}) needs the transformers package "
                          f"(fix: {HF_TOKENIZER_HINT})")
    from open_clip.tokenizer import HFTokenizer

    extra: dict[str, Any] = {}
    if not Path(source).is_dir():
        if _hf_cached(source, list(_HF_TOKENIZER_FILES), cache_dir):
            extra["local_files_only"] = True  # cached: no network round trip
        elif is_offline():
            raise ClipWeightsUnavailable(_tokenizer_hint(source, arch, "not in the local cache and offline mode is on"))
        else:
            err = _network_error(_hf_endpoint())
            if err:
                raise ClipWeightsUnavailable(_tokenizer_hint(source, arch, err))
    try:
        return HFTokenizer(source, context_length=ctx, cache_dir=cache_dir, tokenizer_mode=mode, **kwargs, **extra)
    except (OSError, ValueError, ImportError) as e:
        if Path(source).is_dir():
            raise ConfigError(f"cannot load the tokenizer in {source}: {' '.join(str(e).split())[:200]}") from None
        raise ClipWeightsUnavailable(_tokenizer_hint(source, arch, e)) from None


def _tokenizer_hint(source: str, arch: str, reason: Any) -> str:
    reason = " ".join(str(reason).split())[:200]
    return (f"cannot load the tokenizer {source!r} of CLIP model {arch}: {reason}. It downloads with the weights; "
            f"offline, pass a local copy: --tokenizer DIR (a folder saved with tokenizer.save_pretrained())")


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
    err = _network_error(url, timeout)
    if err:
        raise ClipWeightsUnavailable(offline_hint(repr(what), err))


def _network_error(url: str, timeout: float = 3.0) -> str | None:
    """None when one TCP connect to ``url``'s host (or the proxy) succeeds, else why not."""
    import socket
    from urllib.parse import urlsplit

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    target = urlsplit(proxy if proxy else url)
    host = target.hostname
    if not host:
        return None
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} unreachable ({e})"
    return None


def _looks_like_network(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(w in text for w in ("download", "connection", "offline", "resolve", "timed out", "network", "hub"))


def _weights_id(name: str, ckpt: str | None) -> str:
    """A stable identifier of the weights: path + size + mtime for files, the name otherwise."""
    if ckpt and os.path.isfile(ckpt):
        st = os.stat(ckpt)
        return f"{name}|{os.path.realpath(ckpt)}|{st.st_size}|{int(st.st_mtime)}"
    return name

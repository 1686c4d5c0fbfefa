"""Checks before any work starts: can the output be written where the user pointed, and does every
local path the config names exist?

A dataset path that is an existing file, or a folder this process cannot write, used to surface
as a raw ``FileExistsError``/``PermissionError`` (exit 1) after the crawl or the first downloads.
:func:`check_output` raises a :class:`ConfigError` (exit 2) naming the path and the fix before
anything is fetched; ``clipcrawl run --check`` runs it too. Remote outputs (``s3://``...) are not
probed here (listing a bucket may need credentials the run gets later); the run reports them.

:func:`check_paths` (part of :func:`check_run`) does the same for every input path of a run config
that can be checked without the network: ``dedup.exclude_near``, every ``blocklists`` list,
``sources.crawl.seeds_file``, ``sources.urls.path``, ``sources.commoncrawl.paths`` (globs must match),
``filters.clip.pretrained`` when it is a checkpoint path, ``filters.clip.unsafe_head`` /
``watermark_head``. A missing one used to fail the run (exit 2) after the crawl and the downloads.
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path
from typing import Any

from clipcrawl.schemas.config import ConfigError

#: Sub-folders a dataset writes into; each one that exists must be writable too.
DATASET_DIRS = ("shards", "samples", "runs", "crawl", "dedup", "embeddings")


def _writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (a real probe: permissions, ACLs, read-only
    mounts), else the reason."""
    probe = folder / f".clipcrawl-write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def check_output(path: str, what: str = "dataset") -> None:
    """Raise :class:`ConfigError` unless ``path`` is (or can become) a writable folder."""
    if "://" in path and not path.startswith("file://"):
        return
    p = Path(path.removeprefix("file://")).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the {what} path is an existing file, not a folder "
                          f"(fix: point the {what} at a folder, or move the file away)")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{existing}: is a file, so the {what} folder {p} cannot be created "
                          f"(fix: choose a path whose parent folders are folders)")
    folders = [existing] + ([p / d for d in DATASET_DIRS if (p / d).is_dir()] if existing == p else [])
    for folder in folders:
        reason = _writable(folder)
        if reason:
            raise ConfigError(f"{folder}: cannot write the {what} here ({reason}) "
                              f"(fix: choose a writable folder, or give this user write permission: "
                              f"chmod u+w {folder})")


def _local(path: Any) -> str | None:
    """The local file-system path of ``path``, or None for a remote URL (not probed)."""
    s = os.fspath(path)
    if s.startswith("file://"):
        return s.removeprefix("file://")
    return None if "://" in s else s


def _missing(path: str) -> bool:
    p = os.path.expanduser(path)
    if glob.has_magic(p):
        return not glob.glob(p)
    return not os.path.exists(p)


def _looks_like_checkpoint(pretrained: str) -> bool:
    """The rule of clipcrawl.filters.clip.model: a path, not an open_clip tag such as ``openai``."""
    return (os.path.exists(os.path.expanduser(pretrained)) or "/" in pretrained or os.sep in pretrained
            or pretrained.startswith(("~", ".")) or pretrained.endswith((".pt", ".bin", ".pth", ".safetensors")))


def config_paths(cfg: Any) -> list[tuple[str, str]]:
    """(field, local path) for every input path of a run config (remote ones left out)."""
    out: list[tuple[str, Any]] = []
    src = getattr(cfg, "sources", None)
    crawl = getattr(src, "crawl", None)
    cc = getattr(src, "commoncrawl", None)
    urls = getattr(src, "urls", None)
    if crawl is not None:
        if crawl.seeds_file is not None:
            out.append(("sources.crawl.seeds_file", crawl.seeds_file))
        out += [("sources.crawl.blocklists", b) for b in crawl.blocklists]
    if cc is not None:
        out += [("sources.commoncrawl.paths", p) for p in cc.paths]
        out += [("sources.commoncrawl.blocklists", b) for b in cc.blocklists]
    if urls is not None:
        out.append(("sources.urls.path", urls.path))
    out += [("blocklists", b) for b in getattr(cfg, "blocklists", None) or []]
    download = getattr(cfg, "download", None)
    out += [("download.blocklists", b) for b in getattr(download, "blocklists", None) or []]
    out += [("dedup.exclude_near", p) for p in getattr(getattr(cfg, "dedup", None), "exclude_near", None) or []]
    clip = getattr(getattr(cfg, "filters", None), "clip", None)
    if clip is not None:
        if clip.pretrained and _looks_like_checkpoint(str(clip.pretrained)) and not clip.pretrained.startswith("hf-hub:"):
            out.append(("filters.clip.pretrained", clip.pretrained))
        for name in ("unsafe_head", "watermark_head"):
            if getattr(clip, name, None):
                out.append((f"filters.clip.{name}", getattr(clip, name)))
        for i, spec in enumerate(getattr(clip, "models", None) or []):  # further scorers (the first is above)
            if i and spec.pretrained and _looks_like_checkpoint(str(spec.pretrained)):
                out.append((f"filters.clip.models[{i}].pretrained", spec.pretrained))
            if spec.tokenizer and spec.tokenizer.startswith(("/", "~", ".")):  # a folder, not an HF name
                out.append((f"filters.clip.models[{i}].tokenizer", spec.tokenizer))
    signals = getattr(getattr(cfg, "filters", None), "signals", None)
    if signals is not None and signals.aesthetic_head and "aesthetic" in signals.compute:
        out.append(("filters.signals.aesthetic_head", signals.aesthetic_head))
    return [(f, local) for f, p in out if (local := _local(p)) is not None]


def check_paths(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the field and the path of the first input path that is missing."""
    missing = [(f, p) for f, p in config_paths(cfg) if _missing(p)]
    if missing:
        lines = [f"{f}: {os.path.abspath(os.path.expanduser(p))} does not exist" for f, p in missing]
        raise ConfigError("; ".join(lines) + " (fix: correct the path in the config, or create it)")


def check_run(cfg: Any) -> None:
    """Preflight of ``clipcrawl run`` (and ``run --check``), before anything is written: the dataset
    folder can be written and every local input path the config names exists."""
    check_output(str(cfg.dataset), "dataset")
    check_paths(cfg)
    for target in getattr(getattr(cfg, "output", None), "exports", None) or []:
        check_export_target(str(cfg.dataset), target)
    clip = getattr(getattr(cfg, "filters", None), "clip", None)
    if clip is not None and clip.enabled:  # a real model on a core install: name the [clip] extra now
        from clipcrawl.filters.clip.model import require_torch_clip

        for m in [clip.model, *(s.model for s in getattr(clip, "models", None) or [])]:
            require_torch_clip(m)
    signals = getattr(getattr(cfg, "filters", None), "signals", None)
    if signals is not None:  # a signal's extra not installed, an aesthetic head missing: exit 2 naming it
        from clipcrawl.filters.signals import check_signals

        check_signals(signals, clip is not None and clip.enabled)
        if "aesthetic" in signals.compute and clip is not None and clip.enabled:
            _check_aesthetic_width(str(signals.aesthetic_head), clip.model)


def _check_aesthetic_width(head_path: str, model: str) -> None:
    """The aesthetic head takes the CLIP model's embedding width (from the model's config, not its weights)."""
    import json

    from clipcrawl.filters.clip.model import TINY_ALIASES, TINY_DIR, TINY_NAME
    from clipcrawl.filters.clip.safety_head import load_head

    dim = None
    if model in TINY_ALIASES:
        dim = json.loads((TINY_DIR / f"{TINY_NAME}.json").read_text())["embed_dim"]
    elif not model.startswith(("hf-hub:", "local-dir:")):
        try:
            import open_clip

            dim = (open_clip.get_model_config(model.replace("/", "-")) or {}).get("embed_dim")
        except ImportError:
            dim = None
    load_head(head_path, "aesthetic", dim)


def check_export_target(dataset: str, target: Any) -> None:
    """``output.exports``: OUT outside the dataset, writable, and the format's writer library installed."""
    from clipcrawl.base.storage import fs_and_path

    src, out = fs_and_path(dataset)[1].rstrip("/"), fs_and_path(target.out)[1].rstrip("/")
    if out == src or out.startswith(src + "/"):
        raise ConfigError(f"output.exports: {target.out} is inside the dataset {dataset}: choose a folder outside it")
    check_output(target.out, f"output.exports ({target.format}) out")
    need = {"hf": ("datasets", "export"), "litdata": ("litdata", "export")}.get(target.format)
    if need is not None:
        import importlib.util

        if importlib.util.find_spec(need[0]) is None:
            raise ConfigError(f"output.exports: format {target.format} needs {need[0]} "
                              f"(fix: pip install 'clipcrawl[{need[1]}]')")

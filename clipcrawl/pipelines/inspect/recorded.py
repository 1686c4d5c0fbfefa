"""Which CLIP model scored a dataset: the ``clip_model`` the samples record, matched against the runs'
``config.yaml`` for the arguments that load it again (``search`` embeds prompts with it, ``index``
records it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.storage import fs_and_path


@dataclass(frozen=True)
class RecordedModel:
    name: str | None  # clip_model as stored in the dataset
    model: str | None  # load_clip arguments
    pretrained: str | None


def _load_name(model: str, pretrained: str | None) -> str:
    from clipcrawl.filters.clip.model import TINY_ALIASES, TINY_NAME

    if model in TINY_ALIASES:
        return TINY_NAME
    if model.startswith(("hf-hub:", "local-dir:")):
        return model
    return f"{model}/{pretrained}" if pretrained else model


def _parse_name(name: str) -> tuple[str, str | None]:
    from clipcrawl.filters.clip.model import TINY_ALIASES

    if name in TINY_ALIASES:
        return "tiny", None
    if name.startswith(("hf-hub:", "local-dir:")) or "/" not in name:
        return name, None
    model, pretrained = name.split("/", 1)
    return model, pretrained


def _configs(layout: DatasetLayout) -> list[dict[str, Any]]:
    """``filters.clip`` of the dataset's config.yaml, then of each run's, newest first."""
    import yaml

    urls = [layout.config] + [layout.run_file(r, "config.yaml") for r in reversed(layout.runs())]
    out = []
    for url in urls:
        fs, p = fs_and_path(url)
        if not fs.exists(p):
            continue
        with fs.open(p, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        clip = ((data.get("filters") or {}).get("clip") or {}) if isinstance(data, dict) else {}
        if clip.get("model"):
            out.append(clip)
    return out


def _stored_model_name(layout: DatasetLayout) -> str | None:
    import pyarrow.parquet as pq

    for folder in (layout.samples, layout.shards):
        fs, p = fs_and_path(folder)
        if not fs.isdir(p):
            continue
        for f in sorted(fs.ls(p, detail=False)):
            if not f.endswith(".parquet"):
                continue
            with fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                if "clip_model" not in pf.schema_arrow.names:
                    continue
                vals = pf.read(columns=["clip_model"]).column(0).drop_null()
            if len(vals):
                return str(vals[0])
    return None


def recorded_model(dataset: str) -> RecordedModel:
    """The CLIP model that scored ``dataset`` (see the module docstring); fields None if unknown."""
    layout = DatasetLayout.of(dataset)
    name = _stored_model_name(layout)
    configs = _configs(layout)
    for clip in configs:
        if name is None or _load_name(clip["model"], clip.get("pretrained")) == name:
            return RecordedModel(name or _load_name(clip["model"], clip.get("pretrained")),
                                 clip["model"], clip.get("pretrained"))
    if name is not None:
        return RecordedModel(name, *_parse_name(name))
    return RecordedModel(None, None, None)

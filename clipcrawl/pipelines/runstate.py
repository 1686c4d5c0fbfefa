"""Where a run stands: ``runs/NNNN/run.json`` (the paths come from :class:`~clipcrawl.base.layout.DatasetLayout`)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.storage import exists, read_json, write_json
from clipcrawl.schemas.config import RunConfig, dump_config


@dataclass
class RunState:
    run: int
    state: str = "collect"  # collect | plan | process | publish | done | failed
    started: float = field(default_factory=time.time)
    finished: float | None = None
    config_sha256: str = ""
    sources: dict[str, Any] = field(default_factory=dict)
    planned_shards: list[str] = field(default_factory=list)
    published_shards: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def load_state(layout: DatasetLayout, run: int) -> RunState | None:
    url = layout.run_file(run, "run.json")
    return RunState(**read_json(url)) if exists(url) else None


def save_state(layout: DatasetLayout, st: RunState) -> None:
    write_json(asdict(st), layout.run_file(st.run, "run.json"))


def config_sha256(cfg: RunConfig) -> str:
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()

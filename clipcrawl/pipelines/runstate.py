"""Where a run stands (``runs/NNNN/run.json``) and the paths of a dataset."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clipcrawl.base.storage import fs_and_path, read_json, write_json
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


class Dataset:
    """Paths of one dataset directory (local or fsspec URL)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def shards(self) -> str:
        return self.p("shards")

    def run_dir(self, run: int) -> str:
        return self.p("runs", f"{run:04d}")

    def runs(self) -> list[int]:
        fs, path = fs_and_path(self.p("runs"))
        if not fs.isdir(path):
            return []
        return sorted(int(x.rstrip("/").rsplit("/", 1)[-1]) for x in fs.ls(path, detail=False)
                      if x.rstrip("/").rsplit("/", 1)[-1].isdigit())

    def load_state(self, run: int) -> RunState | None:
        fs, path = fs_and_path(self.p("runs", f"{run:04d}", "run.json"))
        if not fs.exists(path):
            return None
        return RunState(**read_json(self.p("runs", f"{run:04d}", "run.json")))

    def save_state(self, st: RunState) -> None:
        write_json(asdict(st), self.p("runs", f"{st.run:04d}", "run.json"))


def config_sha256(cfg: RunConfig) -> str:
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()

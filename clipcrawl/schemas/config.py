"""Typed, frozen run configuration loaded from YAML.

One model per component, composed into :class:`RunConfig`. Unknown keys and wrong types are
errors (``extra="forbid"``); :func:`load_config` turns them into a :class:`ConfigError` whose
message names the file, the field and the fix, and the CLI exits with code 2 on it.
The resolved config is written next to the output with :func:`save_resolved`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from clipcrawl.schemas.components import (  # noqa: F401 - the config models, importable from here
    BalanceConfig,
    ClipConfig,
    DedupConfig,
    DownloadConfig,
    FiltersConfig,
    ImageFilterConfig,
    OutputConfig,
    TextFilterConfig,
)
from clipcrawl.schemas.configbase import (  # noqa: F401
    DEFAULT_USER_AGENT,
    NOAI_DIRECTIVES,
    SECRET_OPTION_WORDS,
    ConfigError,
    Model,
)
from clipcrawl.schemas.sources import (  # noqa: F401
    CommonCrawlConfig,
    CrawlConfig,
    SourcesConfig,
    UrlListConfig,
    check_blocklists,
)


# ---------------------------------------------------------------- run
class RunConfig(Model):
    """Everything ``clipcrawl run CONFIG.yaml`` needs."""

    dataset: str = Field(..., description="Dataset directory or fsspec URL (s3://bucket/prefix).")
    preset: str | None = Field(None, description="Curation recipe (clipcrawl.filters.presets): laion400m, "
                               "laion2b-en, datacomp-basic, datacomp-clip-top30, metaclip. Explicit fields win.")
    sources: SourcesConfig
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    log_format: Literal["auto", "text", "json"] = "auto"
    engine: Literal["local", "ray"] = Field("local", description="local: this machine; ray: a Ray cluster.")
    ray_address: str | None = Field(None, description="Ray cluster address (default: RAY_ADDRESS or local).")
    ray_actors: int | None = Field(None, ge=1, description="Fetch/score actors (default: one per free CPU).")
    ray_gpus_per_actor: float | None = Field(None, ge=0, description="GPU share per CLIP actor when the "
                                             "cluster has GPUs (default: the stage's, 0.25).")
    ray_node_ip: str | None = Field(None, description="This machine's IP as the Ray cluster knows it "
                                    "(when auto-detection picks the wrong interface).")
    blocklists: list[str] = Field(
        default_factory=list, description="Blocklist files applied to every source and the download "
        "(merged into sources.crawl, sources.commoncrawl and download blocklists).",
    )

    @field_validator("blocklists")
    @classmethod
    def _blocklists_exist(cls, v: list[str]) -> list[str]:
        return check_blocklists(v)

    @model_validator(mode="after")
    def _spread_blocklists(self) -> RunConfig:
        """Top-level blocklists apply everywhere: merge them into each component's list."""
        if not self.blocklists:
            return self

        def merged(own: list[str]) -> list[str]:
            return list(dict.fromkeys([*self.blocklists, *own]))

        src = self.sources
        updates = {}
        if src.crawl is not None:
            updates["crawl"] = src.crawl.model_copy(update={"blocklists": merged(src.crawl.blocklists)})
        if src.commoncrawl is not None:
            updates["commoncrawl"] = src.commoncrawl.model_copy(update={"blocklists": merged(src.commoncrawl.blocklists)})
        object.__setattr__(self, "sources", src.model_copy(update=updates))
        object.__setattr__(self, "download", self.download.model_copy(update={"blocklists": merged(self.download.blocklists)}))
        return self


# ---------------------------------------------------------------- loading
_FIXES = {
    "extra_forbidden": "remove it or check its spelling against the documented fields",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``FILE: field a.b: message (fix: ...)``."""
    lines = []
    for e in err.errors():
        fix = _FIXES.get(e["type"], "correct the value")
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: field {_loc(e['loc'])}: {msg} (fix: {fix})")
    return "\n".join(lines)


def parse_config(data: Any, model: type[BaseModel] = RunConfig, source: str = "<config>") -> Any:
    """Validate a mapping into ``model``; raise :class:`ConfigError` with readable lines."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | os.PathLike[str], model: type[BaseModel] = RunConfig) -> Any:
    """Load and validate a YAML config. Relative paths inside it resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found (fix: pass the path of a YAML file)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {e}".replace("\n", " ")) from None
    cwd = os.getcwd()
    try:  # validators check relative paths against the config's folder
        os.chdir(p.parent.resolve())
        cfg = parse_config(data if data is not None else {}, model, str(p))
    finally:
        os.chdir(cwd)
    return _absolutize(cfg, p.parent.resolve())


def _absolutize(cfg: Any, base: Path) -> Any:
    """Make the relative local paths of a validated config absolute against ``base``."""
    if isinstance(cfg, RunConfig):
        updates: dict[str, Any] = {}
        if "://" not in cfg.dataset and not Path(cfg.dataset).is_absolute():
            updates["dataset"] = str(base / cfg.dataset)
        src = cfg.sources
        src_up: dict[str, Any] = {}
        if src.crawl and src.crawl.seeds_file and not src.crawl.seeds_file.is_absolute():
            src_up["crawl"] = src.crawl.model_copy(update={"seeds_file": base / src.crawl.seeds_file})
        if src.urls and "://" not in src.urls.path and not Path(src.urls.path).is_absolute():
            src_up["urls"] = src.urls.model_copy(update={"path": str(base / src.urls.path)})
        if src.commoncrawl:
            paths = [p if ("://" in p or Path(p).is_absolute()) else str(base / p) for p in src.commoncrawl.paths]
            src_up["commoncrawl"] = src.commoncrawl.model_copy(update={"paths": paths})
        def absolute(paths: list[str]) -> list[str]:
            return [p if Path(p).is_absolute() else str(base / p) for p in paths]

        if src.crawl and src.crawl.blocklists:
            crawl = src_up.get("crawl", src.crawl)
            src_up["crawl"] = crawl.model_copy(update={"blocklists": absolute(crawl.blocklists)})
        if src.commoncrawl and src.commoncrawl.blocklists:
            cc = src_up["commoncrawl"]
            src_up["commoncrawl"] = cc.model_copy(update={"blocklists": absolute(cc.blocklists)})
        if cfg.download.blocklists:
            updates["download"] = cfg.download.model_copy(update={"blocklists": absolute(cfg.download.blocklists)})
        if cfg.blocklists:
            updates["blocklists"] = absolute(cfg.blocklists)
        if src_up:
            updates["sources"] = src.model_copy(update=src_up)
        if updates:
            cfg = cfg.model_copy(update=updates)
    return cfg


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(_plain(cfg.model_dump()), sort_keys=False, allow_unicode=True)


def _plain(obj: Any) -> Any:
    """Python dump -> YAML-safe values (paths as strings; inf stays YAML's .inf)."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj

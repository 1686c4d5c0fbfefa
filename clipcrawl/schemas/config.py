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
    SignalsConfig,
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
                               "laion2b-en, datacomp-basic, datacomp-clip-top30, metaclip, laion-aesthetics-6plus. "
                               "Explicit fields win.")
    sources: SourcesConfig
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    log_format: Literal["auto", "text", "json"] = "auto"
    engine: Literal["local", "ray"] = Field("local", description="local: this machine; ray: a Ray cluster.")
    ray_address: str | None = Field(None, description="Ray cluster address (default: RAY_ADDRESS or local).")
    ray_actors: int | None = Field(None, ge=1, le=100_000, description="Fetch/score actors (default: one per free CPU).")
    ray_gpus_per_actor: float | None = Field(None, ge=0, le=8, description="GPU share per CLIP actor when the "
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


#: Bounds on a config file: its size, its nesting (aliases expanded) and what aliases may add to it.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_DEPTH = 32
MAX_ALIAS_VALUES = 10_000
MAX_ALIAS_CHARS = 1_000_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses documents nested deeper than :data:`MAX_CONFIG_DEPTH`
    while composing (PyYAML's composer recurses: a deep file would end in RecursionError)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_CONFIG_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels (fix: flatten it)")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_aliases(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases (``*name``) expand it by more than :data:`MAX_ALIAS_VALUES`
    values or :data:`MAX_ALIAS_CHARS` characters ("billion laughs"), refer to themselves, or nest it
    deeper than :data:`MAX_CONFIG_DEPTH` once expanded. Work is linear in the file: each distinct
    node is measured once."""
    sizes: dict[int, tuple[int, int, int]] = {}  # id -> (values, characters, height), expanded
    active: set[int] = set()
    distinct = [0, 0]

    def measure(node: yaml.Node, depth: int) -> tuple[int, int, int]:
        key = id(node)
        if key in active:
            raise ConfigError("an alias (*name) refers to a value that contains it (fix: remove the recursion)")
        if key not in sizes:
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigError(f"aliases nest it deeper than {MAX_CONFIG_DEPTH} levels (fix: flatten it)")
            if isinstance(node, yaml.ScalarNode):
                size = (1, len(node.value), 1)
            else:
                active.add(key)
                children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
                parts = [measure(c, depth + 1) for c in children]
                active.discard(key)
                size = (1 + sum(p[0] for p in parts), sum(p[1] for p in parts), 1 + max((p[2] for p in parts), default=0))
            sizes[key] = size
            distinct[0] += 1
            distinct[1] += size[1] if isinstance(node, yaml.ScalarNode) else 0
        if depth + sizes[key][2] - 1 > MAX_CONFIG_DEPTH:
            raise ConfigError(f"aliases nest it deeper than {MAX_CONFIG_DEPTH} levels (fix: flatten it)")
        return sizes[key]

    values, chars, _ = measure(root, 1)
    if values - distinct[0] > MAX_ALIAS_VALUES or chars - distinct[1] > MAX_ALIAS_CHARS:
        raise ConfigError(f"aliases (*name) expand the config to {values:,} values and {chars:,} characters, "
                          f"past the bound of {MAX_ALIAS_VALUES:,} values or {MAX_ALIAS_CHARS:,} characters more "
                          f"than the file holds (a 'billion laughs'?) (fix: write the values out, or use fewer "
                          f"aliases)")


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document within the bounds above; ConfigError names ``source`` and the problem."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses non-printable characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node)
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: e.g. an int of 5,000 digits
        raise ConfigError(f"{source}: not valid YAML: {e}".replace("\n", " ")) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_config(path: str | os.PathLike[str], model: type[BaseModel] = RunConfig) -> Any:
    """Load and validate a YAML config (at most :data:`MAX_CONFIG_BYTES`). Relative paths inside it
    resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found (fix: pass the path of a YAML file)")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES:,} bytes: not a config (fix: pass the run config; "
                              f"long lists such as seeds belong in files, e.g. sources.crawl.seeds_file)")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config: {e.strerror or e} (fix: check the path and its "
                          f"permissions)") from None
    data = load_yaml(text, str(p))
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
        head = cfg.filters.signals.aesthetic_head
        if head and "://" not in head and not Path(head).is_absolute():
            sig = cfg.filters.signals.model_copy(update={"aesthetic_head": str(base / head)})
            updates["filters"] = cfg.filters.model_copy(update={"signals": sig})
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

"""The base of every config model (frozen, unknown keys forbidden), the config error, shared defaults."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

DEFAULT_USER_AGENT = "clipcrawl/0.1 (+https://github.com/clipcrawl/clipcrawl)"
#: X-Robots-Tag / meta robots directives that forbid use of an image for AI training.
NOAI_DIRECTIVES = ("noai", "noimageai", "noml", "noindex", "noimageindex")


class ConfigError(ValueError):
    """Unusable configuration or input. The CLI prints it on one line and exits with code 2."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


#: storage_options keys whose values are secrets: never written to runs/NNNN/config.yaml.
SECRET_OPTION_WORDS = ("key", "secret", "token", "password", "credential")


#: Bounds on a free-form option mapping (storage_options): nesting and values in all.
MAX_OPTION_DEPTH = 16
MAX_OPTION_VALUES = 10_000


def check_options(v: Any) -> Any:
    """``v`` (nested dicts and lists) within :data:`MAX_OPTION_DEPTH` levels and
    :data:`MAX_OPTION_VALUES` values, shared references counted each time; ValueError otherwise."""
    redact(v)
    return v


def redact(v: Any) -> Any:
    """A copy of ``v`` with the values of secret-looking keys replaced, at any depth. Bounded: a
    structure deeper than :data:`MAX_OPTION_DEPTH` or larger than :data:`MAX_OPTION_VALUES` (e.g.
    shared references that expand exponentially) raises ValueError instead of running on."""
    budget = [MAX_OPTION_VALUES]

    def walk(x: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_OPTION_VALUES:,} values (shared or repeated structures counted "
                             f"each time)")
        if not isinstance(x, (dict, list, tuple)):
            return x
        if depth >= MAX_OPTION_DEPTH:
            raise ValueError(f"nested deeper than {MAX_OPTION_DEPTH} levels")
        if isinstance(x, dict):
            return {k: "<redacted>" if any(w in str(k).lower() for w in SECRET_OPTION_WORDS) else walk(y, depth + 1)
                    for k, y in x.items()}
        return type(x)(walk(y, depth + 1) for y in x)

    return walk(v, 0)

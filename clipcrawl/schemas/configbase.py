"""The base of every config model (frozen, unknown keys forbidden), the config error, shared defaults."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

DEFAULT_USER_AGENT = "clipcrawl/0.1 (+https://github.com/clipcrawl/clipcrawl)"
#: X-Robots-Tag / meta robots directives that forbid use of an image for AI training.
NOAI_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")


class ConfigError(ValueError):
    """Unusable configuration or input. The CLI prints it on one line and exits with code 2."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


#: storage_options keys whose values are secrets: never written to runs/NNNN/config.yaml.
SECRET_OPTION_WORDS = ("key", "secret", "token", "password", "credential")


def redact(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: "<redacted>" if any(w in str(k).lower() for w in SECRET_OPTION_WORDS) else redact(x)
                for k, x in v.items()}
    return v

"""Provenance rules on downloaded samples: drop AI-generated images, keep only given licences.

The columns come from the download (``clipcrawl.crawler.imagemeta`` on the original bytes; the page's licence
link from the crawler's extractor): ``ai_generated`` (IPTC/C2PA digital source type) and ``license``.
:class:`FilterProvenance` sets ``filtered_image`` with ``"provenance: <reason>"``; the curation pass re-applies it
like the other image rules. :func:`license_id` names a licence URL or notice by its short id (``cc-by``,
``cc0`` ...), which ``--licenses`` and the reports use.
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import pyarrow as pa

from clipcrawl.base.stage import Stage, mark, ok_mask
from clipcrawl.schemas.components import LICENSE_IDS, ImageFilterConfig
from clipcrawl.schemas.configbase import ConfigError
from clipcrawl.schemas.status import Status

_CC_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)", re.I)
_CC_TEXT = re.compile(r"\bcc[ -]?(0|zero|by(?:[ -](?:nc|sa|nd)){0,2})\b", re.I)


def license_id(value: str | None) -> str | None:
    """``"https://creativecommons.org/licenses/by-sa/4.0/"`` -> ``"cc-by-sa"``; ``"CC BY-NC 4.0"`` ->
    ``"cc-by-nc"``; public domain dedication/mark -> ``cc0``/``pdm``; anything else -> None."""
    if not value:
        return None
    m = _CC_URL.search(value)
    if m:
        kind, code = m.group(1).lower(), m.group(2).lower()
        if kind == "publicdomain":
            return "cc0" if code.startswith("zero") else "pdm" if code == "mark" else None
        lid = "cc-" + code
        return lid if lid in LICENSE_IDS else None
    m = _CC_TEXT.search(value)
    if m:
        code = m.group(1).lower().replace(" ", "-")
        lid = "cc0" if code in ("0", "zero") else "cc-" + code
        return lid if lid in LICENSE_IDS else None
    if re.search(r"public domain mark", value, re.I):
        return "pdm"
    return None


#: refusal kinds of the download's error messages (clipcrawl.crawler.imagemeta, aitxt, X-Robots-Tag noml)
REFUSAL_KINDS = (
    ("IPTC Data Mining (image XMP)", "by the image's IPTC metadata"),
    ("C2PA/CAWG training-mining (image manifest)", "by the image's C2PA manifest"),
    ("image metadata unreadable (refused conservatively)", "image metadata refused unread"),
    ("ai.txt", "(Spawning ai.txt)"),
    ("X-Robots-Tag noml", "X-Robots-Tag directive (noml)"),
)


def refusal_kind(message: str | None) -> str | None:
    """Which of :data:`REFUSAL_KINDS` an ``error_message`` (or img2dataset status_dict key) is, or None."""
    if not message:
        return None
    return next((kind for kind, needle in REFUSAL_KINDS if needle in message), None)


def licence_breakdown(values: list[str | None]) -> dict[str, int]:
    """Counts of licence ids (``unknown`` for a notice or URL that is no known licence, ``none`` for null)."""
    out: dict[str, int] = {}
    for v in values:
        k = license_id(v) or ("unknown" if v else "none")
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def check_licenses(names: list[str], source: str = "--licenses") -> list[str]:
    """The licence ids, lowercased; ConfigError (exit 2) naming an unknown one."""
    out = [n.strip().lower() for n in names if n.strip()]
    bad = [n for n in out if n not in LICENSE_IDS]
    if bad:
        raise ConfigError(f"{source}: unknown licence {', '.join(bad)} (fix: use {', '.join(LICENSE_IDS)})")
    return out


def provenance_problems(table: pa.Table, cfg: ImageFilterConfig) -> list[str | None]:
    """One reason per row (None: passes)."""
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    if cfg.exclude_ai_generated and "ai_generated" in table.column_names:
        src = table.column("ai_generated_source").to_pylist() if "ai_generated_source" in table.column_names \
            else [None] * n
        for i, v in enumerate(table.column("ai_generated").to_pylist()):
            if v:
                reasons[i] = f"AI-generated (its {src[i] or 'metadata'} digital source type)"
    wanted = set(cfg.licenses)  # ids, checked by the config model
    if wanted:
        lic = table.column("license").to_pylist() if "license" in table.column_names else [None] * n
        for i, v in enumerate(lic):
            if reasons[i] is None:
                lid = license_id(v)
                if lid not in wanted:
                    reasons[i] = f"licence {lid or 'unknown'} not in {','.join(sorted(wanted))}"
    return reasons


def provenance_rules_on(cfg: ImageFilterConfig) -> bool:
    return bool(cfg.enabled and (cfg.exclude_ai_generated or cfg.licenses))


class FilterProvenance(Stage):
    """Set ``filtered_image`` on success rows that are AI-generated (``exclude_ai_generated``) or under no
    licence of ``licenses``."""

    name: ClassVar[str] = "provenance"

    def __init__(self, config: ImageFilterConfig | None = None) -> None:
        self.config = config or ImageFilterConfig()

    def process(self, table: pa.Table) -> pa.Table:
        if not provenance_rules_on(self.config) or table.num_rows == 0:
            return table
        reasons = provenance_problems(table, self.config)
        drop = np.array([r is not None for r in reasons]) & ok_mask(table)
        return mark(table, drop, Status.FILTERED_IMAGE, self.name, reasons)

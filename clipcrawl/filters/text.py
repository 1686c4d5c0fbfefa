"""Caption rules, applied before CLIP because they cost nothing.

LAION and DataComp drop captions that carry no description: empty or very short texts,
file names (``IMG_1234.jpg``), bare URLs, numbers, and stock words such as "image" or "logo".
Credit lines ("Credit Jane Doe", "Photo: AP", "Getty Images", "© Reuters") name the photographer,
not the picture: they are dropped with the generic rules (the extractor keeps them as captions
on purpose, so that this rule says why they go). ``languages`` keeps only captions whose
identified ``language`` (:mod:`clipcrawl.base.captions`) is in the list.
Each rule gives a reason, recorded as ``"text: <reason>"`` on rows it drops.

Length: ``max_chars`` (default 2,000) drops longer captions ("caption longer than 2000 characters")
rather than cutting them: a cut caption no longer says what its image shows. COYO-700M drops alt
texts over 1,000 characters or 256 words; LAION-400M/5B, DataComp and img2dataset set no maximum,
and CLIP's text encoder reads only 77 tokens (~300 characters). Upstream, the extractor keeps at most
:data:`~clipcrawl.base.captions.MAX_TEXT_CHARS` (4,096) characters of any page text, so a 2 MB alt
arrives cut to 4,096 and this rule still drops it with its reason (a ``max_chars`` above 4,096 would
let such cut captions through).
"""

from __future__ import annotations

import re
from typing import ClassVar

import pyarrow as pa

from clipcrawl.base.captions import annotate_captions
from clipcrawl.base.stage import Stage, mark, ok_mask
from clipcrawl.schemas.config import TextFilterConfig
from clipcrawl.schemas.status import Status

_GENERIC_WORDS = """image images img photo photos picture pictures pic pics foto logo icon thumbnail thumb banner avatar
    untitled placeholder spacer blank default click here read more more image not found no image
    screenshot graphic graphics figure fig illustration header footer button arrow loading"""
GENERIC_CAPTIONS = frozenset(_GENERIC_WORDS.split()) | {
    "click here", "read more", "image not found", "no image", "no photo", "not found"}

_FILENAME = re.compile(r"^[\w\-. ()]+\.(jpe?g|png|gif|webp|bmp|svg|tiff?|avif|heic)$", re.I)
_CAMERA = re.compile(r"^(img|dsc|dscn|dscf|pict|pxl|mvimg|image|photo|screenshot)[_\- ]?\d[\d_\- ]*$", re.I)
_URL = re.compile(r"^(https?://|www\.)\S+$", re.I)
_NO_LETTERS = re.compile(r"^[\W\d_]+$")
_WORD = re.compile(r"\w+")
#: "Credit Jane Doe", "Photo: AP", "Foto: dpa", "Image courtesy of NASA", "© 2020 Reuters", "(c) Getty"
_CREDIT = re.compile(
    r"^(?:credits?\b|©|\(c\)|copyright\b|courtesy\b|(?:image|photo(?:graph)?|picture|pic|foto|bild|quelle|"
    r"source|crédit|crédito)s?\s*(?:by|credit|courtesy(?: of)?|von|de|par)?\s*[:|/\-\u2013\u2014])", re.I)
#: a caption that is only an agency / stock library name (optionally "/Photographer")
_AGENCY = re.compile(
    r"^(?:[\w.' ]{0,40}/\s*)?(?:getty images|shutterstock|reuters|associated press|ap photo|ap|afp|epa|dpa|"
    r"istock(?:photo)?|alamy|imago|picture alliance|bloomberg)(?:\s*/\s*[\w.' ]{0,40})?$", re.I)


def caption_problem(caption: str | None, cfg: TextFilterConfig, deny: list[re.Pattern[str]] | None = None,
                    language: str | None = None) -> str | None:
    """Why ``caption`` fails the rules, or None when it passes (``language``: its identified language)."""
    if caption is None or not caption.strip():
        return "empty caption"
    text = " ".join(caption.split())
    if len(text) < cfg.min_chars:
        return f"caption shorter than {cfg.min_chars} characters"
    if len(text) > cfg.max_chars:
        return f"caption longer than {cfg.max_chars} characters"
    if len(_WORD.findall(text)) < cfg.min_words:
        return f"caption has fewer than {cfg.min_words} words"
    if cfg.drop_generic:
        low = text.lower().strip(" .:-_|")
        if low in GENERIC_CAPTIONS:
            return "generic caption"
        if _FILENAME.match(text) or _CAMERA.match(text):
            return "caption is a file name"
        if _URL.match(text):
            return "caption is a URL"
        if _NO_LETTERS.match(text):
            return "caption has no letters"
        if _CREDIT.match(text) or _AGENCY.match(text):
            return "caption is a credit line"
    for pat in deny or ():
        if pat.search(text):
            return f"caption matches deny pattern {pat.pattern!r}"
    if cfg.languages and (language or "").split("-")[0].lower() not in cfg.languages:
        return f"caption language {language or 'unknown'} not in {','.join(cfg.languages)}"
    return None


class FilterCaptions(Stage):
    """Set ``filtered_text`` on rows whose caption fails a rule."""

    name: ClassVar[str] = "text"

    def __init__(self, config: TextFilterConfig | None = None) -> None:
        self.config = config or TextFilterConfig()
        self._deny = [re.compile(p) for p in self.config.deny_patterns]

    def process(self, table: pa.Table) -> pa.Table:
        if not self.config.enabled or table.num_rows == 0:
            return table
        ok = ok_mask(table)
        captions = table.column("caption").to_pylist()
        langs: list[str | None] = [None] * table.num_rows
        if self.config.languages:
            langs = annotate_captions(table).column("language").to_pylist()
        reasons = [caption_problem(c, self.config, self._deny, lang) if keep else None
                   for c, keep, lang in zip(captions, ok, langs)]
        return mark(table, [r is not None for r in reasons], Status.FILTERED_TEXT, self.name, reasons)

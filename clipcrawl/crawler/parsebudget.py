"""A bound on what parsing a page costs, checked before the HTML parser runs.

Lexbor's cost grows with nesting, not with page size alone: each block start tag looks down the
stack of open elements for a ``<p>`` to close, and formatting elements closed by something else are
re-created ("reconstructed") at every later text. 200,000 nested ``<div>`` (2.2 MB) took it 162
CPU-seconds; ``<p><font size=N>x</p>`` repeated 2,000 times (40 kB) makes it build 2 million elements
(700 MB). :func:`check_parse_budget` raises :class:`PageTooComplex` for a page that would nest
deeper than :data:`MAX_DEPTH` or build more than :data:`MAX_ELEMENTS`; the extractor's callers
record it as a page failure. Cost: one count of ``<`` per page, one regex pass over pages of more
than ~1,400 tags, and a sketch of the tree builder (~2 µs a tag) for pages the cheap bounds cannot
clear: on the 220 testdata pages (33 MB) extract_page went from 0.26 to 0.33 CPU-seconds, the regex
pass most of it. tests/crawler/test_extract_budget.py and tests/fuzz/test_fuzz_extract.py hold the
sketch against Lexbor's own trees.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DEPTH", "MAX_ELEMENTS", "SKETCH_MIN_TAGS", "PageTooComplex", "check_parse_budget"]

MAX_DEPTH = 512  # Chromium's HTML parser nests no deeper (kMaximumHTMLParserDOMTreeDepth); real pages: < 50
MAX_ELEMENTS = 500_000  # elements the parser may build (~350 bytes each in Lexbor); 5 MB of flat markup: ~250,000
SKETCH_MIN_TAGS = 16_000  # pages with fewer "<" are sketched only when formatting tags could blow up (see below)


class PageTooComplex(ValueError):
    """The page is over the parse budget (:data:`MAX_DEPTH`, :data:`MAX_ELEMENTS`); raised before parsing."""


# element kinds of the HTML tree-construction rules, as bit flags
(_SPECIAL, _HARD, _SCOPE, _MARKER, _FORMAT, _VOID, _CLOSE_P, _KEEP_AFE, _TABLE, _HEADING, _BREAKOUT, _FOREIGN,
 _INTEGRATION, _SVG_MATHML) = (1 << i for i in range(14))
_KINDS: dict[str, int] = {}
for _kind, _names in (
    (_SPECIAL, "address applet area article aside base basefont bgsound blockquote body br button caption center col "
               "colgroup dd details dialog dir div dl dt embed fieldset figcaption figure footer form frame frameset "
               "h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input keygen li link listing main marquee "
               "menu meta nav noembed noframes noscript object ol p param plaintext pre script search section select "
               "source style summary table tbody td template textarea tfoot th thead title tr track ul wbr xmp"),
    (_SCOPE, "applet caption html table td th marquee object template"),
    (_MARKER, "applet caption marquee object td template th"),
    (_FORMAT, "a b big code em font i nobr s small strike strong tt u"),
    (_VOID, "area base basefont bgsound br col embed frame hr image img input keygen link meta param source track wbr"),
    (_CLOSE_P, "address article aside blockquote center details dialog dir div dl fieldset figcaption figure footer "
               "form header hgroup hr li dd dt listing main menu nav ol p pre search section summary table ul "
               "h1 h2 h3 h4 h5 h6"),
    (_KEEP_AFE, "html head body frameset base basefont bgsound link meta noframes template param source track iframe "
                "noembed rb rp rt rtc"),  # start tags that do not reconstruct formatting (with _CLOSE_P, _TABLE)
    (_TABLE, "caption col colgroup tbody td tfoot th thead tr"),
    (_HEADING, "h1 h2 h3 h4 h5 h6"),
    (_BREAKOUT, "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img li "
                "listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var"),
    (_FOREIGN | _SVG_MATHML, "svg math"),
):
    for _n in _names.split():
        _KINDS[_n] = _KINDS.get(_n, 0) | _kind
for _n, _k in _KINDS.items():
    if _k & _SPECIAL and _n not in ("address", "div", "p"):
        _KINDS[_n] = _k | _HARD  # where <li>/<dd>/<dt> stop looking for an open one to close
_NO_RECONSTRUCT = _CLOSE_P | _KEEP_AFE | _TABLE
#: comment (``<!-->`` is one, ``--!>`` ends one) | doctype, processing instruction, bogus comment | tag ("/" 1,
#: name 2, attributes 3). Each alternative matches or fails without rescanning; where it differs from the
#: HTML tokenizer it reads more tags, not fewer (a ">" or "<" inside a quoted attribute value)
_TOKEN = re.compile(r"<(?:!--(?:-?>|.*?(?:--!?>|\Z))|[!?][^>]*>?|(/?)([a-z][^\s/<>]*)([^<>]*)>)", re.S | re.I)
#: elements whose content is text up to their end tag (when inserted as HTML elements, not inside svg/math)
_RAW_END = {name: re.compile(rf"</{name}(?=[\s/>])", re.I)
            for name in ("script", "style", "xmp", "iframe", "noembed", "noframes", "textarea", "title")}
#: start tags of the formatting elements the parser re-creates ("reconstructs") after they were closed
_REOPENED = re.compile(r"<(?:b|big|code|em|font|i|nobr|s|small|strike|strong|tt|u)(?=[\s/>])[^<>]*>", re.I)
_REOPENED_BYTES = re.compile(_REOPENED.pattern.encode(), re.I)
#: svg/math elements whose content is HTML again; special and scope boundaries, as foreign elements only
_INTEGRATION_POINTS = frozenset({"foreignobject", "desc", "title", "mi", "mo", "mn", "ms", "mtext", "annotation-xml"})
_UNQUOTED_SLASH = re.compile(r"=\s*[^\s\"'=>]+/$")  # <x a=b/>: the slash is the value's, not self-closing
_FONT_BREAKOUT = re.compile(r"\b(?:color|face|size)\s*=", re.I)
_WALK = 64  # active formatting entries searched per lookup (the parser's own loops are bounded too)


def check_parse_budget(text: str, raw: bytes | None = None, max_depth: int = MAX_DEPTH,
                       max_elements: int = MAX_ELEMENTS) -> None:
    """Raise :class:`PageTooComplex` when parsing ``text`` would nest elements deeper than ``max_depth`` or
    build more than ``max_elements``; linear in the page. ``raw``: the page bytes when their encoding is
    ASCII-compatible (every ``<`` of the text is a ``<`` byte there), scanned faster than the text.

    Cheap bounds first. A page of T ``<`` builds at most T elements, 32 clones per end tag (the
    adoption agency), and the formatting elements the parser re-creates after something else closed
    them: at each tag or text at most as many as are active, each round needing a tag to close them
    again, so T²/4 in all, and at most (3 x distinct formatting tags + 2) x T (three identical ones at
    most: the parser's "Noah's Ark"). Under :data:`SKETCH_MIN_TAGS` tags depth costs Lexbor well under
    a second. Pages these bounds cannot clear, and all larger ones, are sketched by :class:`_TreeCost`
    (1 of the 220 testdata pages)."""
    data = raw if raw is not None else text
    tags = data.count(b"<" if raw is not None else "<")
    if tags < SKETCH_MIN_TAGS:
        if tags * tags // 4 + 33 * tags <= max_elements:
            return
        reopened = (_REOPENED_BYTES if raw is not None else _REOPENED).findall(data)
        if (min(len(reopened), 3 * len(set(reopened))) + 2 + 33) * tags <= max_elements:
            return
    _TreeCost(max_depth, max_elements).feed(text)


def _self_closing(attrs: str) -> bool:
    return attrs.endswith("/") and not _UNQUOTED_SLASH.search(attrs)


class _TreeCost:
    """A linear sketch of the HTML tree builder: the stack of open elements and the list of active
    formatting elements under the "in body" and table insertion rules, simplified, to count the depth
    and the elements a page makes the parser build. It keeps within two of Lexbor's depth on the 220
    testdata pages and sees the known blow-ups (tests/crawler/test_extract_budget.py)."""

    def __init__(self, max_depth: int, max_elements: int) -> None:
        self.max_depth, self.max_elements = max_depth, max_elements
        self.stack: list[str] = []
        self.kinds: list[int] = []
        self.entries: list[list | None] = []  # the active formatting entry of each open element
        self.pos: dict[str, list[int]] = {}  # name -> its indices in the stack
        self.special: list[int] = []  # indices of the open special / hard special / scope / foreign elements
        self.hard: list[int] = []
        self.scope: list[int] = []
        self.foreign: list[int] = []
        self.integration: list[int] = []
        self.html_in_foreign: list[int] = []  # HTML elements inside svg/math (in their integration points)
        self.afe: list[list | None] = []  # active formatting entries [name, attributes, stack index or -1]; None = marker
        self.elements = self.depth = 0
        self.form_open = False

    def near(self, name: str) -> int:
        p = self.pos.get(name)
        return p[-1] if p else -1

    def count(self) -> None:
        self.elements += 1
        if self.elements > self.max_elements:
            raise PageTooComplex(f"page over the parse budget: the HTML parser would build over "
                                 f"{self.max_elements:,} elements")

    def push(self, name: str, kind: int, entry: list | None = None) -> None:
        i = len(self.stack)
        if i >= self.max_depth:
            raise PageTooComplex(f"page over the parse budget: elements nested deeper than {self.max_depth}")
        self.count()
        self.stack.append(name)
        self.kinds.append(kind)
        self.entries.append(entry)
        self.pos.setdefault(name, []).append(i)
        if kind & _SPECIAL:
            self.special.append(i)
            if kind & _HARD:
                self.hard.append(i)
            if kind & _SCOPE:
                self.scope.append(i)
        if kind & _FOREIGN:
            self.foreign.append(i)
        elif kind & _INTEGRATION:
            self.integration.append(i)
        if self.foreign and not kind & _SVG_MATHML:
            self.html_in_foreign.append(i)
        if entry is not None:
            entry[2] = i
        self.depth = max(self.depth, i + 1)

    def pop_to(self, i: int) -> None:
        """Pop the element at index ``i`` and everything above it."""
        stack, kinds, entries = self.stack, self.kinds, self.entries
        while len(stack) > i:
            name, kind, e = stack.pop(), kinds.pop(), entries.pop()
            self.pos[name].pop()
            if e is not None:
                e[2] = -1
            j = len(stack)
            if self.html_in_foreign and self.html_in_foreign[-1] == j:
                self.html_in_foreign.pop()
            if kind:
                for idx in (self.special, self.hard, self.scope, self.foreign, self.integration):
                    if idx and idx[-1] == j:
                        idx.pop()
                if kind & _MARKER:  # clear the active formatting list up to the last marker
                    while self.afe and self.afe.pop() is not None:
                        pass

    def top_scope(self, extra: str | None = None) -> int:
        top = self.scope[-1] if self.scope else -1
        return max(top, self.near(extra)) if extra else top

    def reconstruct(self) -> None:
        afe = self.afe
        if not afe or afe[-1] is None or afe[-1][2] >= 0:
            return
        k = len(afe) - 1
        while k > 0 and afe[k - 1] is not None and afe[k - 1][2] < 0:
            k -= 1
        for e in afe[k:]:
            self.push(e[0], _KINDS[e[0]], e)

    def find(self, name: str, attrs: str | None = None) -> list[int]:
        """Indices of the ``name`` entries (with ``attrs`` when given) after the last marker, last first."""
        afe, out = self.afe, []
        for k in range(len(afe) - 1, max(-1, len(afe) - 1 - _WALK), -1):
            e = afe[k]
            if e is None:
                break
            if e[0] == name and (attrs is None or e[1] == attrs):
                out.append(k)
                if attrs is None:
                    break
        return out

    def close_formatting(self, name: str, remove: bool = False) -> bool:
        """The adoption agency's effect, erring towards more re-created elements; False when ``name`` is not
        active. ``remove``: the entry goes in any case (a new ``<a>``)."""
        found = self.find(name)
        if not found:
            return False
        e = self.afe[found[0]]
        i = e[2]
        if i < 0:  # not open: only the entry goes
            self.afe.remove(e)
        elif i < self.top_scope():  # not in scope: ignored
            if remove:
                self.afe.remove(e)
                self.entries[i] = None
        elif self.special and self.special[-1] > i:  # a block inside it: the parser moves a clone into the
            self.entries[i] = None  # block (kept here as still open), and the entry may come back later
            self.count()
            if remove:
                self.afe.remove(e)
            else:
                e[2] = -1
        else:
            self.pop_to(i)
            if e in self.afe:
                self.afe.remove(e)
        return True

    def start(self, name: str, attrs: str) -> None:
        kind = _KINDS.get(name, 0)
        if self.foreign and self.foreign_now():  # inside svg/math: foreign elements, but for the breakout tags
            if not (kind & _BREAKOUT or (name == "font" and _FONT_BREAKOUT.search(attrs))):
                if _self_closing(attrs):
                    self.count()
                elif kind & _FOREIGN:
                    self.push(name, kind)
                else:  # not an HTML element: no HTML rule sees it
                    self.push("^" + name, _SVG_MATHML | (_SPECIAL | _HARD | _SCOPE | _INTEGRATION
                                                         if name in _INTEGRATION_POINTS else 0))
                return
            self.pop_to(self.foreign[-1])
        if kind & _TABLE:
            self.table_part(name, kind)
            return
        if name == "form":
            if self.form_open:  # the parser keeps one form element pointer
                return
            self.form_open = True
        if kind & _CLOSE_P:
            p = self.near("p")
            if p >= 0 and p > self.top_scope("button"):
                self.pop_to(p)
            if kind & _HEADING and self.kinds and self.kinds[-1] & _HEADING:
                self.pop_to(len(self.stack) - 1)
            elif name in ("li", "dd", "dt"):
                j = self.near("li") if name == "li" else max(self.near("dd"), self.near("dt"))
                if j >= 0 and self.hard[-1] == j:
                    self.pop_to(j)
            elif name == "table":
                t = self.near("table")
                if t >= 0 and t > max(self.near("td"), self.near("th"), self.near("caption")):
                    self.pop_to(t)
        elif name in ("option", "optgroup"):
            if self.stack and self.stack[-1] == "option":
                self.pop_to(len(self.stack) - 1)
        elif name == "a":
            self.close_formatting(name, remove=True)
        elif name == "nobr":
            self.reconstruct()
            n = self.near("nobr")
            if n >= 0 and n > self.top_scope():
                self.close_formatting(name)
        elif name == "button" or name == "select":  # one inside another closes it (a select: and is dropped)
            b = self.near(name)
            if b >= 0 and b > self.top_scope():
                self.pop_to(b)
                if name == "select":
                    return
        if not kind & _NO_RECONSTRUCT:
            self.reconstruct()
        if kind & _VOID or (kind & _FOREIGN and _self_closing(attrs)):
            self.count()
            return
        entry = None
        if kind & _FORMAT:
            entry = [name, " ".join(attrs.split()), -1]
            same = self.find(name, entry[1])
            if len(same) >= 3:  # Noah's Ark: at most three identical entries after the last marker
                del self.afe[same[-1]]
            self.afe.append(entry)
        self.push(name, kind, entry)
        if kind & _MARKER:
            self.afe.append(None)

    def table_part(self, name: str, kind: int) -> None:
        t = self.near("table")
        if t < 0:
            return  # outside a table the parser ignores them
        if name in ("td", "th", "tr"):
            cell = max(self.near("td"), self.near("th"))
            if cell > t:
                self.pop_to(cell)
            row = self.near("tr")
            if row > t:
                if name == "tr":
                    self.pop_to(row)
            else:
                if max(self.near("tbody"), self.near("thead"), self.near("tfoot")) < t:
                    self.push("tbody", _KINDS["tbody"])
                if name != "tr":
                    self.push("tr", _KINDS["tr"])
        else:
            self.pop_to(t + 1)
            if name == "col":
                self.count()
                return
        self.push(name, kind)
        if kind & _MARKER:
            self.afe.append(None)

    def end(self, name: str) -> None:
        if self.foreign and self.kinds[-1] & _SVG_MATHML:  # the nearest svg/math element of that name above
            html = max(self.html_in_foreign[-1] if self.html_in_foreign else -1, self.foreign[0] - 1)
            i = self.near(name if name in ("svg", "math") else "^" + name)  # the last HTML element, else HTML rules
            if i > html:
                self.pop_to(i)
                return
        kind = _KINDS.get(name, 0)
        if name == "form":
            self.form_open = False
            if self.stack and self.stack[-1] == "form":
                self.pop_to(len(self.stack) - 1)
            return
        if kind & _FORMAT and self.close_formatting(name):
            return
        if kind & _HEADING:
            name = max(("h1", "h2", "h3", "h4", "h5", "h6"), key=self.near)
        i = self.near(name)
        if i < 0:
            if name in ("p", "br"):
                self.count()  # the parser inserts an empty one
            return
        if kind & _TABLE or name == "table":
            if name == "table" or i > self.near("table"):
                self.pop_to(i)
        elif kind & _SPECIAL:
            in_scope = i >= self.top_scope("button" if name == "p" else None)
            if in_scope and name not in ("body", "html") and (name != "li" or i > max(self.near("ol"), self.near("ul"))):
                self.pop_to(i)
        elif not self.special or self.special[-1] < i:
            self.pop_to(i)

    def foreign_now(self) -> bool:
        """Inside svg/math, and not in one of their HTML integration points."""
        return bool(self.foreign) and (not self.integration or self.integration[-1] < self.foreign[-1])

    def feed(self, text: str) -> None:
        pos, search = 0, _TOKEN.search
        while (m := search(text, pos)) is not None:
            if m.start() > pos:  # text: re-creates closed formatting elements
                self.reconstruct()
            pos = m.end()
            slash, name, attrs = m.groups()
            if not name:  # comment, doctype
                continue
            name = name.lower()
            if slash:
                self.end(name)
                continue
            self.start(name, attrs)
            if (name in _RAW_END or name == "plaintext") and self.stack and self.stack[-1] == name \
                    and not self.foreign_now():
                if name == "plaintext":
                    return  # the rest of the page is text
                close = _RAW_END[name].search(text, pos)
                if close is None:
                    return
                pos = close.start()

"""Closed status vocabularies. Every row of every artifact carries one of these.

Sample statuses keep img2dataset's three values with their meanings (``success``,
``failed_to_download``, ``failed_to_resize``) and add ours for the filtering passes.
A row's ``error_message`` is always ``"<stage>: <message>"`` when its status is not success.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Status of one sample (one input image URL + caption)."""

    SUCCESS = "success"
    FAILED_TO_DOWNLOAD = "failed_to_download"  # network/http error, robots, X-Robots-Tag, TDMRep, too large
    BLOCKED = "blocked"  # a blocklist rule (URL, domain:, sha256:, md5:) matched; the rule is in error_message
    FAILED_TO_RESIZE = "failed_to_resize"  # undecodable, too small, bad aspect ratio, pixel bomb
    FILTERED_TEXT = "filtered_text"  # a caption rule rejected it (incl. language)
    FILTERED_IMAGE = "filtered_image"  # an image rule rejected it: min side, aspect ratio, min bytes
    FAILED_TO_SCORE = "failed_to_score"  # CLIP could not read the image
    FILTERED_CLIP = "filtered_clip"  # clip_similarity below the threshold
    DUPLICATE = "duplicate"  # dedup dropped it: see duplicate_of and dedup_method
    FILTERED_BALANCE = "filtered_balance"  # MetaCLIP balancing sampled it out (clipcrawl.filters.metaclip)

    def __str__(self) -> str:  # so f"{status}" gives the plain value
        return self.value


class PageStatus(str, Enum):
    """Status of one fetched (or refused) web page in the crawler's pages table."""

    OK = "ok"  # fetched and parsed
    ROBOTS_DISALLOWED = "robots_disallowed"  # robots.txt forbids it; never requested
    META_NOAI = "meta_noai"  # meta robots noai/noimageai/noml/noindex/noimageindex: pairs withheld
    HTTP_ERROR = "http_error"  # 4xx/5xx after retries
    FETCH_ERROR = "fetch_error"  # timeout, reset, DNS, TLS ...
    NOT_HTML = "not_html"  # content type is not HTML
    TOO_LARGE = "too_large"  # body over the size cap
    BLOCKED_ADDRESS = "blocked_address"  # resolves to a private/loopback/... address
    BLOCKED = "blocked"  # a blocklist rule (URL or domain:) matched; never requested
    TDM_RESERVED = "tdm_reserved"  # TDMRep: tdm-reservation 1 (header, meta or tdmrep.json): pairs withheld
    REDIRECT_LIMIT = "redirect_limit"  # too many redirects, or a redirect loop
    OFF_DOMAIN = "off_domain"  # redirected outside the allowed domains

    def __str__(self) -> str:
        return self.value


class DedupMethod(str, Enum):
    """Which deduplication rule marked a sample as a duplicate."""

    URL = "url"  # same normalised URL + caption
    SHA256 = "sha256"  # same original bytes
    PIXELS = "pixels"  # same decoded (resized) pixels
    PHASH = "phash"  # perceptual hash within Hamming distance k
    SEMANTIC = "semantic"  # CLIP image embedding cosine >= tau
    EVAL_SET = "eval_set"  # near-duplicate of an evaluation-set image

    def __str__(self) -> str:
        return self.value


SAMPLE_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
PAGE_STATUSES: tuple[str, ...] = tuple(s.value for s in PageStatus)
DEDUP_METHODS: tuple[str, ...] = tuple(m.value for m in DedupMethod)

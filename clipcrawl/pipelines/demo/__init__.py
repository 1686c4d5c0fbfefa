"""``clipcrawl demo``: the main job on an embedded default, against a bundled local website.

It starts :class:`~clipcrawl.pipelines.demo.site.DemoSite` on 127.0.0.1, then runs the real
pipeline on it (crawl -> download -> caption rules -> tiny CLIP -> dedup -> shards) with a config
that allows exactly that loopback network, and prints the summary.
"""

from __future__ import annotations

from typing import Any

from clipcrawl.schemas.config import RunConfig, parse_config

#: The shipped tiny CLIP separates the demo's matched captions (cosine >= ~0.45) from its
#: deliberately mismatched ones (<= ~0.35); LAION's 0.28 is for OpenAI ViT-B/32.
DEMO_THRESHOLD = 0.4


#: (extra, a module it installs, what the demo's next steps use it for)
NEXT_STEP_EXTRAS = (
    ("report", "duckdb", "clipcrawl stats and its HTML report"),
    ("index", "faiss", "clipcrawl index / search / browse"),
    ("clip", "open_clip", "real CLIP models (ViT-B-32 ...)"),
)


def missing_extras_note() -> str | None:
    """One line naming the extras the demo's next steps need and this install lacks (None: all there).
    The demo itself runs on the core install: the tiny CLIP on ONNX Runtime, pHash dedup in numpy."""
    import importlib.util

    missing = [(extra, what) for extra, mod, what in NEXT_STEP_EXTRAS if importlib.util.find_spec(mod) is None]
    if not missing:
        return None
    parts = "; ".join(f"[{extra}] {what}" for extra, what in missing)
    extras = ",".join(extra for extra, _ in missing)
    return f'not installed (core install): {parts} - add them with pip install "clipcrawl[{extras}]"'


def demo_config(site_url: str, out: str, **overrides: Any) -> RunConfig:
    loopback = ["127.0.0.0/8"]  # the demo site only; every other private address stays refused
    data: dict[str, Any] = {
        "dataset": out,
        "sources": {"crawl": {"seeds": [site_url], "allowed_networks": loopback, "max_pages": 200,
                              "max_depth": 4}},
        "download": {"image_size": 128, "allowed_networks": loopback, "timeout": 10},
        "filters": {"clip": {"model": "tiny", "pretrained": None, "threshold": DEMO_THRESHOLD,
                             "save_embeddings": True}},
        "output": {"samples_per_shard": 32},
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            sub = data.setdefault(section, {})
            for part in field.split(".")[:-1]:
                sub = sub.setdefault(part, {})
            sub[field.split(".")[-1]] = value
        else:
            data[key] = value
    return parse_config(data, RunConfig, "demo config")

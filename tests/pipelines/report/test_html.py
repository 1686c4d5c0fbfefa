"""The HTML page: one self-contained file, and it renders in headless Chromium without errors."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from clipcrawl.pipelines.report.aggregate import aggregate
from clipcrawl.pipelines.report.html import CSP, render
from clipcrawl.pipelines.report.layout import find_parts
from clipcrawl.pipelines.report.samples import pick_samples
from tests.pipelines.report.test_aggregate import _img2dataset_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
SECTIONS = ("overview", "funnel", "causes", "domains", "captions", "languages", "images", "clip", "dedup",
            "throughput", "runs", "manifest")

#: Injected into a copy of the page: records errors, CSP violations and every <img>'s natural size.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => {
  const t = e.target;
  __errors.push(t && t.tagName ? 'resource failed: ' + t.tagName + ' ' + (t.alt || '') : 'error: ' + e.message);
}, true);
window.addEventListener('securitypolicyviolation', e => __errors.push('csp: ' + e.blockedURI));
for (const level of ['error', 'warn']) {
  const orig = console[level];
  console[level] = (...a) => { __errors.push(level + ': ' + a.join(' ')); orig.apply(console, a); };
}
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({cls: i.className, card: !!i.closest('.card'),
                                               w: i.naturalWidth, h: i.naturalHeight, ok: i.complete}));
  const pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({imgs, errors: __errors, cards: document.querySelectorAll('.card').length});
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="module")
def page(demo_html) -> str:
    return demo_html


def test_self_contained(page):
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    srcs = re.findall(r"""\b(?:src|href|action|poster)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.I)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "url(" not in page.split("</style>")[0]
    assert f'content="{CSP}"' in page
    for sid in SECTIONS:
        assert f'id="{sid}"' in page
    plots = re.findall(r'<img class="plot" alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(plots) >= 10
    for b64 in plots:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_escapes_captions():
    card = {"key": "k", "shard": "00000", "url": "https://x/\"><script>alert(1)</script>",
            "caption": "<img src=https://evil.example/x.png>", "status": "success", "clip_similarity": 0.3,
            "error_message": None, "image": None, "image_from": None}
    page = render({"funnel": []}, {"random_kept": [card]})
    assert "<script>alert" not in page and "<img src=https://evil" not in page
    assert "&lt;img src=https://evil.example/x.png&gt;" in page


@pytest.mark.unverified("a hand-made Parquet-only folder for the report")
def test_plain_dir_page(tmp_path):
    _img2dataset_dir(tmp_path)
    parts = find_parts(tmp_path)
    page = render(aggregate(parts), pick_samples(parts))
    assert 'id="funnel"' in page and 'id="clip"' not in page and 'id="throughput"' in page


def _chromium(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
    profile.mkdir()
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_renders_in_chromium(page, tmp_path):
    probe_csp = CSP.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';")
    probed = page.replace(f'content="{CSP}"', f'content="{probe_csp}"', 1).replace("<head>", "<head>" + PROBE, 1)
    path = tmp_path / "report.html"
    path.write_text(probed, encoding="utf-8")
    res = _chromium(["--virtual-time-budget=10000", "--dump-dom", path.as_uri()], tmp_path)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, flags=re.S)
    assert m, f"no probe in the DOM; stderr: {res.stderr[-2000:]}"
    probe = json.loads(html.unescape(m.group(1)))
    assert probe["errors"] == []
    plots = [i for i in probe["imgs"] if i["cls"] == "plot"]
    thumbs = [i for i in probe["imgs"] if i["card"]]
    assert len(plots) == page.count('<img class="plot"') >= 10
    assert len(thumbs) == page.count('<div class="card"><img') >= 24
    assert probe["cards"] == page.count('<div class="card">')
    assert all(i["ok"] and i["w"] > 0 and i["h"] > 0 for i in probe["imgs"]), probe["imgs"]
    # the unmodified page (its own CSP, no script) renders to a non-blank screenshot
    shot = tmp_path / "shot.png"
    _chromium(["--window-size=1000,1400", f"--screenshot={shot}", (tmp_path / "orig.html").as_uri()
               if (tmp_path / "orig.html").write_text(page, encoding="utf-8") else ""], tmp_path)
    with Image.open(shot) as im:
        assert im.size == (1000, 1400) and len(im.convert("L").getcolors(1 << 16) or []) > 20

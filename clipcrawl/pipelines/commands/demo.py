"""``clipcrawl demo``: crawl a bundled website and build a small dataset, offline, in about a minute.

Every demo starts fresh: the site's images are the same each time, so a second run added to the first
dataset would keep nothing (all duplicates of the first). A folder holding a previous demo is therefore
emptied first; any other non-empty folder is refused (exit 2), so no real dataset is touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

ORDER = 0
#: Written into the dataset folder by ``clipcrawl demo``: the folder may be emptied by the next demo.
DEMO_MARK = ".clipcrawl-demo"


def is_demo_folder(out: Path) -> bool:
    """``out`` holds a dataset the demo made: its mark, or (older demos) a config crawling only the
    bundled site on 127.0.0.1 with the tiny CLIP."""
    if (out / DEMO_MARK).is_file():
        return True
    try:
        import yaml

        cfg = yaml.safe_load((out / "config.yaml").read_text()) or {}
        seeds = ((cfg.get("sources") or {}).get("crawl") or {}).get("seeds") or []
        model = ((cfg.get("filters") or {}).get("clip") or {}).get("model")
    except (OSError, ValueError, AttributeError, ImportError):
        return False
    return bool(seeds) and all(str(s).startswith("http://127.0.0.1:") for s in seeds) and model == "tiny"


def start_fresh(out: Path) -> bool:
    """Empty ``out`` when it holds a previous demo (under the dataset lock: not while a run writes it);
    True when something was removed. A non-empty folder that is not a demo: ConfigError (exit 2)."""
    from clipcrawl.pipelines.lock import hold_dataset
    from clipcrawl.schemas.config import ConfigError

    if not out.is_dir() or not any(p.name not in (".lock", DEMO_MARK) for p in out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARK).write_text("made by clipcrawl demo; the next demo into this folder replaces it\n")
        return False
    if not is_demo_folder(out):
        raise ConfigError(f"{out} is not empty and holds no previous demo: pass --out with a new folder "
                          f"(the demo starts fresh and would not add to another dataset)")
    with hold_dataset(str(out), check=False):
        for p in out.iterdir():
            if p.name == ".lock":
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        (out / DEMO_MARK).write_text("made by clipcrawl demo; the next demo into this folder replaces it\n")
    return True


def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Dataset folder to write."),
    serve: bool = typer.Option(False, "--serve", help="Keep the demo site running after the run (Ctrl-C stops)."),
) -> None:
    """Crawl a bundled sample website on 127.0.0.1 and build a dataset from it (offline, ~1 minute).

    Each demo starts fresh: a folder holding a previous demo is emptied first."""
    from rich.console import Console
    from rich.markup import escape

    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.pipelines.demo import demo_config, missing_extras_note
    from clipcrawl.pipelines.demo.site import DemoSite
    from clipcrawl.pipelines.run import run
    from clipcrawl.pipelines.summary import print_run_summary

    console = Console()
    out = out.resolve()
    if start_fresh(out):
        console.print(f"{out}: previous demo removed, starting fresh")
    with DemoSite() as site:
        console.print(f"demo site: {site.url}  ->  dataset: {out}")
        cfg = demo_config(site.url, str(out))
        st = run(cfg)
        report = f"clipcrawl stats {out} --html {out}/report.html"
        note = missing_extras_note()
        if note and "[report]" in note:
            report += '  (needs pip install "clipcrawl[report]")'
        print_run_summary(DatasetLayout(str(out)), st, console, extra={"report": escape(report)})
        if note:
            console.print(note, soft_wrap=True, markup=False, highlight=False)
        if serve:
            console.print(f"serving {site.url} (Ctrl-C to stop)")
            from clipcrawl.pipelines.commands import wait_for_ctrl_c

            wait_for_ctrl_c()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)

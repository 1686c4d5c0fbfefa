"""``clipcrawl score DIR``: CLIP-score the shards of a dataset or of img2dataset output, in place.

Each shard's images are read from ``NNNNN.tar``; ``NNNNN.parquet`` is rewritten atomically with
``clip_similarity``, ``clip_model``, ``punsafe``, ``pwatermark`` (rows whose image is not in the tar
keep null scores) and, with ``--threshold``, rows below it become ``filtered_clip``; the shard's
``_stats.json`` is rewritten with the new counts. Rows an earlier ``--threshold`` filtered are
decided again. Shards already scored by the same model are not re-embedded (only re-thresholded)
unless ``--rescore`` or ``--save-embeddings`` asks for embeddings. ``--top-fraction``,
``--max-punsafe``/``--max-pwatermark`` and ``--preset`` are decided over the whole dataset after
scoring (clipcrawl.pipelines.passes.curate); rerunning with other values re-cuts without rescoring.
Without ``--model`` (nor a preset's), a dataset already scored is scored/cut with the model its rows record
(``clip_model``, as ``search`` does), not the default.

Several scorers in one pass: repeat ``--model`` (``--pretrained``/``--tokenizer`` pair up by position;
``--model NAME=ARCH`` names the column): the first model's cosine stays ``clip_similarity``, each
further one writes ``clip_similarity_<name>`` (clipcrawl.filters.clip.multi). ``--by COLUMN`` makes
``--threshold``/``--top-fraction`` rank by that column (``--threshold-by``/``--top-fraction-by`` one each).
``--signals text,nsfw,aesthetic`` adds the curation signals of :mod:`clipcrawl.filters.signals` (one decode per
image); their rules (``--max-text-area``, ``--max-caption-ocr-overlap``, ``--max-nsfw-score``, ``--min-aesthetic``,
``--top-fraction`` with ``--top-fraction-by aesthetic`` or another signal column) are dataset-wide re-cuts of the stored columns, like the CLIP ones.
"""

from __future__ import annotations

import typer

from clipcrawl.pipelines.commands import (
    ENGINE_HELP,
    GPUS_PER_ACTOR_HELP,
    RAY_ADDRESS_HELP,
    SPARK_MASTER_HELP,
    make_pass_engine,
)

ORDER = 40


def score(
    dir: str = typer.Argument(..., help="Dataset dir (uses DIR/shards) or a folder of NNNNN.tar + NNNNN.parquet."),
    model: list[str] | None = typer.Option(None, "--model", metavar="[NAME=]ARCH",
                                           help="open_clip name, hf-hub:org/repo, or tiny (shipped). Default ViT-B-32 "
                                                "(or the preset's). Repeat to add scorers (NAME=ARCH names the column "
                                                "clip_similarity_NAME)."),
    pretrained: list[str] | None = typer.Option(None, "--pretrained", metavar="TAG|FILE|DIR",
                                                help="Pretrained tag or a local checkpoint file/folder (default openai); "
                                                     "one per --model, in order."),
    tokenizer: list[str] | None = typer.Option(None, "--tokenizer", metavar="DIR|NAME",
                                               help="Local tokenizer folder (or HF name) replacing the model's own; "
                                                    "one per --model, in order ('-' keeps the model's)."),
    by: str | None = typer.Option(None, "--by", metavar="COLUMN", help="Score column --threshold and --top-fraction rank by "
                                  "(e.g. clip_similarity_vit_l_14, clip_sigmoid); default clip_similarity."),
    threshold_by: str | None = typer.Option(None, "--threshold-by", help="Score column of --threshold only."),
    top_fraction_by: str | None = typer.Option(
        None, "--top-fraction-by", help="Score column of --top-fraction only, or a curation signal column: aesthetic "
        "(highest first), text_area, caption_ocr_overlap, nsfw_score (lowest first)."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (fast on CPU, fp16 on GPU), fast, fp32 (exact), fp16, bf16."),
    device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per model batch."),
    threshold: float | None = typer.Option(
        None, "--threshold",
        help="Mark rows with clip_similarity below this as filtered_clip (0.28 is LAION's for ViT-B-32); "
             "default: score only."),
    save_embeddings: bool = typer.Option(False, "--save-embeddings",
                                         help="Also write clip-retrieval's img_emb/ text_emb/ metadata/ folders."),
    embeddings_dir: str | None = typer.Option(None, "--embeddings-dir",
                                              help="Where to write them (default: DIR/embeddings)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Decode threads (default: CPU count, max 8)."),
    rescore: bool = typer.Option(False, "--rescore", help="Re-embed shards already scored by this model."),
    top_fraction: float | None = typer.Option(
        None, "--top-fraction", min=0.0, max=1.0,
        help="Keep the top P of scored candidates by clip_similarity across the whole dataset (not per shard); "
             "rerun with another P to re-cut without rescoring."),
    max_punsafe: float | None = typer.Option(None, "--max-punsafe", help="Drop rows with punsafe above this."),
    max_pwatermark: float | None = typer.Option(None, "--max-pwatermark", help="Drop rows with pwatermark above this."),
    preset: str | None = typer.Option(
        None, "--preset", help="Curation recipe (laion400m, laion2b-en, datacomp-basic, datacomp-clip-top30, datacomp-intersect-b32-l14, "
        "metaclip, laion-aesthetics-6plus): its model and rules, applied over the whole dataset after scoring; explicit options win."),
    signals: str | None = typer.Option(
        None, "--signals", help="Also compute curation signals, comma-separated: text (text_area, ocr_text, "
        "caption_ocr_overlap; RapidOCR, extra [ocr]), nsfw (nsfw_score, nsfw_detections; NudeNet, extra [nudity]), "
        "aesthetic (LAION's aesthetic head on the image embedding; needs --aesthetic-head)."),
    aesthetic_head: str | None = typer.Option(None, "--aesthetic-head",
                                              help="LAION aesthetic predictor file (e.g. sac+logos+ava1-l14-linearMSE.pth)."),
    unsafe_head: str | None = typer.Option(None, "--unsafe-head", help="LAION CLIP-based NSFW detector (torch "
                                           "conversion) or another trained head: punsafe from it, not zero-shot."),
    min_aesthetic: float | None = typer.Option(None, "--min-aesthetic", help="Drop rows with aesthetic below this."),
    max_text_area: float | None = typer.Option(None, "--max-text-area", help="Drop rows whose text covers more."),
    max_caption_ocr_overlap: float | None = typer.Option(
        None, "--max-caption-ocr-overlap", help="Drop 'caption spells the image' rows (e.g. 0.5)."),
    max_nsfw_score: float | None = typer.Option(None, "--max-nsfw-score", help="Drop rows with nsfw_score above this."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    spark_master: str | None = typer.Option(None, "--spark-master", help=SPARK_MASTER_HELP),
    gpus_per_actor: float | None = typer.Option(None, "--gpus-per-actor", min=0.0, help=GPUS_PER_ACTOR_HELP),
) -> None:
    """Score image-caption similarity with CLIP and store it (and zero-shot tags) in each shard's Parquet."""
    from clipcrawl.filters.curate import needs_curation
    from clipcrawl.filters.presets import apply_preset, preset_overrides
    from clipcrawl.pipelines.passes.score import print_summary, score_shards
    from clipcrawl.schemas.config import FiltersConfig, parse_config

    specs = _model_specs(model or [], pretrained or [], tokenizer or [])
    first = specs[0] if specs else {}
    from clipcrawl.schemas.components import SIGNAL_COLUMNS

    signal_rank = top_fraction_by or by
    by_signal = signal_rank in SIGNAL_COLUMNS  # --top-fraction-by aesthetic (...): a signal's top fraction
    explicit = {k: v for k, v in (("model", first.get("model")), ("pretrained", first.get("pretrained")),
                                  ("tokenizer", first.get("tokenizer")), ("threshold", threshold),
                                  ("top_fraction", None if by_signal else top_fraction), ("max_punsafe", max_punsafe),
                                  ("max_pwatermark", max_pwatermark), ("unsafe_head", unsafe_head),
                                  ("threshold_by", threshold_by or (None if by_signal else by)),
                                  ("top_fraction_by", None if by_signal else (top_fraction_by or by)))
                if v is not None}
    if len(specs) > 1:
        explicit["models"] = specs
    sig = {k: v for k, v in (("compute", signals.split(",") if signals else None), ("aesthetic_head", aesthetic_head),
                             ("min_aesthetic", min_aesthetic), ("max_text_area", max_text_area),
                             ("max_caption_ocr_overlap", max_caption_ocr_overlap), ("max_nsfw_score", max_nsfw_score),
                             ("top_fraction", top_fraction if by_signal else None),
                             ("top_by", signal_rank if by_signal else None)) if v is not None}
    text_rules = bool(preset) and "text" in preset_overrides(preset)  # caption rules only when a recipe has them
    filters = parse_config(
        {"clip": {"precision": precision, "device": device, "batch_size": batch_size,
                  "save_embeddings": save_embeddings, "workers": workers, **explicit},
         "text": {"enabled": text_rules}, "signals": sig},
        FiltersConfig, "clipcrawl score",
    )
    filters = apply_preset(filters, preset)
    if "threshold" not in explicit and "threshold" not in (preset_overrides(preset).get("clip", {}) if preset else {}):
        filters = filters.model_copy(update={"clip": filters.clip.model_copy(update={"threshold": -1.0})})
    cfg = filters.clip
    from clipcrawl.filters.signals import check_signals

    check_signals(filters.signals)  # a missing extra or head file: exit 2 before anything is touched
    wide = needs_curation(filters) or preset is not None  # decided over the whole dataset after scoring
    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.pipelines.lock import hold_dataset

    with hold_dataset(DatasetLayout.of(dir).root):  # scoring and the dataset-wide cut: one hold, nobody between
        if not model and not (preset and preset_overrides(preset).get("clip", {}).get("model")):
            filters, cfg = _recorded_model(dir, filters, pretrained[0] if pretrained else None)
        if wide or threshold_by or by:
            _check_rank_columns(dir, cfg)  # before the first write: a column nobody writes is exit 2
        summary = score_shards(dir, cfg, apply_threshold=threshold is not None and not wide,
                               embeddings_dir=embeddings_dir, rescore=rescore,
                               engine=make_pass_engine(engine, ray_address, gpus_per_actor, spark_master),
                               signals=filters.signals)
        print_summary(summary)
        if summary.shards == 0 and not summary.failures:
            raise typer.Exit(2)
        if wide:
            from clipcrawl.pipelines.passes.curate import curate_shards, print_curation

            print_curation(curate_shards(dir, filters, preset))
    from clipcrawl.pipelines.commands import exit_on_failures

    exit_on_failures(summary.failures)


def _check_rank_columns(dir: str, cfg) -> None:
    """The cut's columns exist in the shards or come from this pass's scorers (else ConfigError, exit 2)."""
    import pyarrow.parquet as pq

    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.base.shardfiles import list_shards
    from clipcrawl.base.storage import fs_and_path
    from clipcrawl.filters.clip.cut import CutRule, check_available
    from clipcrawl.filters.clip.multi import scorers

    have = {c for s in scorers(cfg) for c in (s.similarity_column, s.sigmoid_column)} | {"punsafe", "pwatermark"}
    for ref in list_shards(DatasetLayout.of(dir).shards):
        fs, path = fs_and_path(ref.parquet)
        with fs.open(path, "rb") as f:
            have |= set(pq.read_schema(f).names)
    check_available(CutRule.from_config(cfg), have)


def _model_specs(models: list[str], pretrained: list[str], tokenizers: list[str]) -> list[dict]:
    """Repeated --model/--pretrained/--tokenizer, paired by position, as ClipModelSpec dicts."""
    from clipcrawl.schemas.config import ConfigError

    if len(pretrained) > max(1, len(models)) or len(tokenizers) > max(1, len(models)):
        raise ConfigError(f"{len(pretrained)} --pretrained / {len(tokenizers)} --tokenizer for {len(models)} --model "
                          "(fix: one each per --model, in the same order)")
    out: list[dict] = []
    for i, m in enumerate(models or ([None] if pretrained or tokenizers else [])):
        spec: dict = {}
        if m is not None:
            name, sep, arch = m.partition("=")
            if sep and name and "/" not in name and ":" not in name:
                spec["name"], m = name, arch
            spec["model"] = m
        if i < len(pretrained) and pretrained[i] != "-":
            spec["pretrained"] = pretrained[i]
        if i < len(tokenizers) and tokenizers[i] != "-":
            spec["tokenizer"] = tokenizers[i]
        out.append(spec)
    return out


def _recorded_model(dir: str, filters, pretrained: str | None):
    """Without ``--model`` (nor a preset's), the model that scored the dataset (its rows' ``clip_model``),
    so re-cuts and re-thresholds use it instead of the default; ``--pretrained`` still wins."""
    from clipcrawl.pipelines.inspect.recorded import recorded_model

    rec = recorded_model(dir)
    if not rec.model:
        return filters, filters.clip
    update = {"model": rec.model}
    if pretrained is None:
        update["pretrained"] = rec.pretrained
    typer.echo(f"score: using the model the dataset records: {rec.name} (pass --model to change it)", err=True)
    cfg = filters.clip.model_copy(update=update)
    return filters.model_copy(update={"clip": cfg}), cfg


def register(app: typer.Typer) -> None:
    app.command("score")(score)

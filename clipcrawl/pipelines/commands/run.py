"""``clipcrawl run CONFIG.yaml``: the whole pipeline, incremental and resumable."""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 10


def run_command(
    config: Path = typer.Argument(..., help="Run config (YAML). See README 'Config'."),
    dry_run: bool = typer.Option(False, "--check", help="Validate the config and print it resolved; run nothing."),
    blocklist: list[Path] | None = typer.Option(
        None, "--blocklist", help="Blocklist file (repeat): URL, domain:, sha256:, md5: lines; added to the "
        "config's blocklists for every source and the download."),
    blur_faces: bool = typer.Option(False, "--blur-faces", help="Blur detected faces before encoding "
                                                                 "(download.blur_faces)."),
    dns_server: list[str] | None = typer.Option(
        None, "--dns-server", help="DNS server for the image hosts, ip or ip:port (repeat; replaces "
                                   "download.dns_servers; default: /etc/resolv.conf's)."),
    preset: str | None = typer.Option(
        None, "--preset", help="Curation recipe: laion400m, laion2b-en, datacomp-basic, datacomp-clip-top30, metaclip, "
        "laion-aesthetics-6plus (overrides the config's preset:; fields set in the config win over the recipe)."),
    lock: str | None = typer.Option(
        None, "--lock", help="auto (default): flock for a local dataset, a lease object with conditional writes for "
        "an s3:// one (works across machines); local: lock this machine only (a store without conditional "
        "writes; no other machine may write the dataset). Also CLIPCRAWL_LOCK."),
) -> None:
    """Run the configured pipeline: collect -> download -> rules -> CLIP -> dedup -> write (incremental)."""
    from clipcrawl.base.progress import log, setup_logging
    from clipcrawl.filters.presets import apply_preset, describe_preset
    from clipcrawl.pipelines.lock import LockedError
    from clipcrawl.schemas.config import dump_config, load_config

    cfg = load_config(config)  # ConfigError -> exit 2
    if lock is not None:
        import os

        os.environ["CLIPCRAWL_LOCK"] = lock  # read by RunLock (also in the passes a run calls)
        from clipcrawl.pipelines.lock import lock_mode

        lock_mode()  # an unknown mode -> exit 2
    if blocklist or blur_faces or dns_server:
        from clipcrawl.schemas.config import RunConfig, parse_config

        data = cfg.model_dump(context={"keep_secrets": True})  # a rebuilt config keeps its storage secrets
        data["blocklists"] = [*data.get("blocklists", []), *(str(p.resolve()) for p in blocklist or [])]
        data["download"]["blur_faces"] = data["download"]["blur_faces"] or blur_faces
        if dns_server:
            data["download"]["dns_servers"] = list(dns_server)
        cfg = parse_config(data, RunConfig, "command line")
    cfg = apply_preset(cfg, preset or cfg.preset)
    from clipcrawl.pipelines.preflight import check_run

    check_run(cfg)  # dataset path is a file / not writable -> exit 2, before anything starts (--check too)
    if dry_run:
        for line in describe_preset(cfg.preset):
            typer.echo(f"# {line}")
        typer.echo(dump_config(cfg), nl=False)
        return
    if cfg.log_format != "auto":
        setup_logging(cfg.log_format)
    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.base.storage import configure_storage
    from clipcrawl.filters.curate import needs_curation
    from clipcrawl.pipelines.lock import hold_dataset
    from clipcrawl.pipelines.run import run
    from clipcrawl.pipelines.summary import print_run_summary

    configure_storage(cfg.dataset, cfg.output.storage_options)
    try:  # the run and its dataset-wide curation under one hold: no other command between them
        with hold_dataset(cfg.dataset, create=True):
            st = run(cfg)
            print_run_summary(DatasetLayout(cfg.dataset), st)
            if st.error:  # the sources gave nothing at all (every seed refused...): a failure, with the reason
                log.error("clipcrawl run %d: %s", st.run, st.error)
                raise typer.Exit(1)
            if needs_curation(cfg.filters):  # image rules, dataset-wide CLIP cut, MetaCLIP balancing
                from clipcrawl.pipelines.passes.curate import curate_shards, print_curation

                print_curation(curate_shards(cfg.dataset, cfg.filters, cfg.preset))
            for target in cfg.output.exports:  # other loaders' formats follow the dataset as it is now
                from clipcrawl.pipelines.export import export

                res = export(cfg.dataset, target.format, target.out, target.columns, chunk_mb=target.chunk_mb)
                log.info("export %s -> %s: %d samples (%d shards already there)", target.format, res.out,
                         res.samples, res.skipped_shards)
    except LockedError as e:
        log.error("clipcrawl: locked: %s", e)
        raise typer.Exit(3) from None


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)

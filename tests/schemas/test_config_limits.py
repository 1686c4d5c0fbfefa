"""Configs under hostile input (issue 24): YAML bombs, deep nesting, huge files, absurd numbers.

Each is refused with a ConfigError (exit 2 on the command line) naming the problem, and quickly: the
command-line tests run with a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import typing

import pytest
import yaml

from clipcrawl.schemas import components, sources
from clipcrawl.schemas.config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    RunConfig,
    load_config,
    parse_config,
)
from clipcrawl.schemas.configbase import redact

SOURCES = 'sources: {crawl: {seeds: ["http://example.com/"]}}\n'


def billion_laughs(dataset: str, levels: int = 9) -> str:
    """The classic: 9 levels of 9 aliases each, 9^9 (387M) strings once expanded, under storage_options."""
    lines = [f"dataset: {dataset}", SOURCES.strip(), "output:", "  storage_options:",
             '    l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"    l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _clipcrawl(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "clipcrawl", *args], capture_output=True, text=True, timeout=timeout)


def _write(tmp_path, text, name="run.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- YAML bombs
def test_billion_laughs_is_refused_fast(tmp_path):
    p = _write(tmp_path, billion_laughs("ds"))
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="billion laughs") as e:
        load_config(p)
    assert time.monotonic() - t0 < 5 and str(e.value).startswith(f"{p}: aliases (*name) expand the config")


@pytest.mark.parametrize("args", [["run", "--check"], ["run"]])
def test_billion_laughs_exits_2_for_run(tmp_path, args):
    p = _write(tmp_path, billion_laughs(str(tmp_path / "ds")))
    r = _clipcrawl(*args, str(p))
    assert r.returncode == 2 and "billion laughs" in r.stderr and str(p) in r.stderr, r.stderr
    assert not (tmp_path / "ds").exists()


def test_a_few_harmless_aliases_still_work(tmp_path):
    p = _write(tmp_path, "dataset: ds\n" + 'sources: {crawl: {seeds: ["http://example.com/"], delay: &d 1.5}}\n'
               "download: {delay: *d}\n"
               "output:\n  storage_options: &so {endpoint_url: 'http://localhost:9000', key: k, client_kwargs: "
               "{region_name: x}}\n"
               "dedup: &dd {phash_max_distance: 6}\n")
    cfg = load_config(p)
    assert cfg.download.delay == cfg.sources.crawl.delay == 1.5
    assert cfg.output.storage_options["client_kwargs"] == {"region_name": "x"}
    assert cfg.output.model_dump()["storage_options"]["key"] == "<redacted>"


def test_merge_keys_within_bounds_work(tmp_path):
    p = _write(tmp_path, "dataset: ds\ndownload: &net {timeout: 20, delay: 1.0}\n"
               'sources: {crawl: {<<: *net, seeds: ["http://example.com/"]}}\n')
    cfg = load_config(p)
    assert cfg.sources.crawl.timeout == cfg.download.timeout == 20 and cfg.sources.crawl.delay == 1.0


def test_self_referencing_alias_is_refused(tmp_path):
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "output: {storage_options: &a {x: [*a]}}\n")
    with pytest.raises(ConfigError, match="refers to a value that contains it"):
        load_config(p)


def test_aliases_that_nest_too_deep_are_refused(tmp_path):
    chain = ["    a0: &a0 [x]"] + [f"    a{i}: &a{i} [*a{i - 1}]" for i in range(1, 40)]
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "output:\n  storage_options:\n" + "\n".join(chain) + "\n")
    with pytest.raises(ConfigError, match="deeper than"):
        load_config(p)


@pytest.mark.parametrize("levels", [40, 50_000])
def test_deep_nesting_is_refused(tmp_path, levels):
    """PyYAML composes recursively: 50,000 levels used to end in RecursionError (exit 1)."""
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "output: {storage_options: " + "{a: " * levels + "1"
               + "}" * levels + "}\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="nested deeper than 32 levels") as e:
        load_config(p)
    assert time.monotonic() - t0 < 5 and str(p) in str(e.value)


def test_deep_nesting_exits_2_for_run_check(tmp_path):
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "output: {storage_options: " + "[" * 10_000 + "]" * 10_000 + "}\n")
    r = _clipcrawl("run", "--check", str(p))
    assert r.returncode == 2 and "nested deeper" in r.stderr, r.stderr


def test_storage_options_nested_within_yaml_bounds_but_too_deep_names_the_field(tmp_path):
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "output: {storage_options: " + "{a: " * 20 + "1"
               + "}" * 20 + "}\n")
    with pytest.raises(ConfigError, match=r"field output\.storage_options: nested deeper than 16"):
        load_config(p)


def test_oversized_file_is_refused_before_parsing(tmp_path):
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "#" + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1,000,000 bytes"):
        load_config(p)


def test_huge_integer_literal_is_a_config_error(tmp_path):
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "output: {samples_per_shard: " + "9" * 5000 + "}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_shared_references_from_python_are_bounded():
    """The same bomb built in Python (no YAML): parse_config refuses it, and the redaction stops early."""
    node: typing.Any = ["lol"] * 9
    for _ in range(9):
        node = [node] * 9
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"output\.storage_options: more than 10,000 values"):
        parse_config({"dataset": "ds", "sources": {"crawl": {"seeds": ["http://e.com/"]}},
                      "output": {"storage_options": {"x": node}}})
    with pytest.raises(ValueError, match="more than"):
        redact({"x": node})
    deep: typing.Any = {}
    for _ in range(5000):
        deep = {"a": deep}
    with pytest.raises(ValueError, match="deeper than"):
        redact(deep)
    assert time.monotonic() - t0 < 5


def test_redaction_reaches_lists_of_mappings():
    out = redact({"client_kwargs": {"aws_secret_access_key": "s"}, "profiles": [{"token": "t", "name": "n"}]})
    assert out == {"client_kwargs": {"aws_secret_access_key": "<redacted>"},
                   "profiles": [{"token": "<redacted>", "name": "n"}]}


# ---------------------------------------------------------------- numeric bounds
#: Fields where inf means "no limit" (img2dataset's defaults); NaN is refused everywhere.
INF_OK = {("DownloadConfig", "max_image_area"), ("DownloadConfig", "max_aspect_ratio"),
          ("ImageFilterConfig", "max_aspect_ratio")}
MODELS = [RunConfig, components.DownloadConfig, components.TextFilterConfig, components.ClipConfig,
          components.ImageFilterConfig, components.BalanceConfig, components.DedupConfig, components.OutputConfig,
          sources.CrawlConfig, sources.CommonCrawlConfig]
BASE = {"RunConfig": {"dataset": "ds", "sources": {"crawl": {"seeds": ["http://example.com/"]}}},
        "CommonCrawlConfig": {"paths": [__file__]},  # an existing file: the paths are checked
        "CrawlConfig": {"seeds": ["http://example.com/"]}}


def _numeric_fields():
    for model in MODELS:
        for name, f in model.model_fields.items():
            kinds = {a for a in (typing.get_args(f.annotation) or (f.annotation,)) if a is not type(None)}
            if kinds and kinds <= {int, float} and bool not in kinds:
                yield pytest.param(model, name, id=f"{model.__name__}.{name}")


@pytest.mark.parametrize(("model", "name"), list(_numeric_fields()))
def test_every_numeric_field_refuses_nan_inf_and_absurd_values(model, name):
    base = BASE.get(model.__name__, {})
    model.model_validate(base)  # the defaults are valid
    bad = [float("nan"), -math.inf, -(10**30)]
    if (model.__name__, name) not in INF_OK:  # there any large value means "no limit"
        bad += [math.inf, 10**30]
    for value in bad:
        with pytest.raises(ConfigError, match=rf"field {name}:"):
            parse_config({**base, name: value}, model, "t.yaml")


def test_image_size_1e26_fails_run_check(tmp_path):
    p = _write(tmp_path, "dataset: ds\n" + SOURCES + "download: {image_size: 100000000000000000000000000, "
               "timeout: .nan}\n")
    r = _clipcrawl("run", "--check", str(p))
    assert r.returncode == 2, r.stderr
    assert "field download.image_size: Input should be less than or equal to 16384" in r.stderr
    assert "field download.timeout" in r.stderr


def test_download_options_share_the_bounds(tmp_path):
    urls = _write(tmp_path, "http://127.0.0.1:9/a.jpg\n", "urls.txt")
    for opt, value in [("--image-size", "100000"), ("--timeout", "nan"), ("--concurrency", "0"),
                       ("--samples-per-shard", "1000000000"), ("--max-aspect-ratio", "0.5")]:
        r = _clipcrawl("download", str(urls), "--out", str(tmp_path / "out"), opt, value)
        assert r.returncode == 2 and "field" in r.stderr, (opt, r.stderr)
    assert not (tmp_path / "out").exists()


def test_realistic_values_still_pass():
    dl = components.DownloadConfig(image_size=1024, timeout=120, concurrency=2048, per_host_concurrency=64,
                                   max_bytes=200_000_000, workers=128, max_decode_pixels=400_000_000,
                                   max_retry_after=3600, retries=5)
    assert dl.image_size == 1024
    assert components.OutputConfig(samples_per_shard=1_000_000).samples_per_shard == 1_000_000
    assert components.ClipConfig(threshold=-1, batch_size=4096).batch_size == 4096
    assert yaml.safe_load(yaml.safe_dump({"x": math.inf}))["x"] == math.inf  # .inf round-trips in saved configs


def test_a_config_rebuilt_from_the_command_line_keeps_its_storage_secrets(tmp_path):
    """`run --blocklist/--blur-faces/--dns-server` rebuild the config from a dump: the dump must not be the
    redacted one (the run would authenticate with "<redacted>"); the saved config stays redacted."""
    from clipcrawl.schemas.config import RunConfig, dump_config, parse_config

    urls = tmp_path / "u.txt"
    urls.write_text("http://example.invalid/a.jpg\n")
    cfg = parse_config({"dataset": str(tmp_path / "d"), "sources": {"urls": {"path": str(urls)}},
                        "output": {"storage_options": {"key": "AK", "secret": "S3CR3T"}}}, RunConfig, "t")
    again = parse_config(cfg.model_dump(context={"keep_secrets": True}), RunConfig, "t")
    assert again.output.storage_options == {"key": "AK", "secret": "S3CR3T"}
    assert "S3CR3T" not in dump_config(again)

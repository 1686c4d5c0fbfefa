"""Provenance filters: --exclude-ai-generated and --licenses (FilterProvenance, the curation pass, the CLI)."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.cli import main
from clipcrawl.filters.curate import curate, needs_curation
from clipcrawl.filters.provenance import FilterProvenance, check_licenses, license_id
from clipcrawl.schemas.components import FiltersConfig, ImageFilterConfig
from clipcrawl.schemas.configbase import ConfigError
from tests.crawler.provenance_files import FileServer, with_xmp, xmp_packet

BY = "https://creativecommons.org/licenses/by/4.0/"


@pytest.mark.parametrize("value,lid", [
    (BY, "cc-by"),
    ("http://creativecommons.org/licenses/by-nc-sa/3.0/deed.de", "cc-by-nc-sa"),
    ("https://creativecommons.org/publicdomain/zero/1.0/", "cc0"),
    ("https://creativecommons.org/publicdomain/mark/1.0/", "pdm"),
    ("CC BY-SA 4.0", "cc-by-sa"),
    ("Licensed CC0", "cc0"),
    ("(c) 2024 Jane Doe, all rights reserved", None),
    ("https://example.com/terms", None),
    (None, None),
])
def test_license_id(value, lid):
    assert license_id(value) == lid


def _table() -> pa.Table:
    return pa.table({
        "key": ["a", "b", "c", "d", "e"],
        "caption": [f"a red bicycle number {i}" for i in range(5)],
        "status": ["success", "success", "success", "success", "failed_to_download"],
        "error_message": [None, None, None, None, "download: HTTP 404"],
        "ai_generated": [True, False, None, None, True],
        "ai_generated_source": ["c2pa", "iptc", None, None, "iptc"],
        "license": [BY, "https://creativecommons.org/publicdomain/zero/1.0/", "CC BY-NC 4.0", None, BY],
    })


def test_exclude_ai_generated_and_licences():
    out = FilterProvenance(ImageFilterConfig(exclude_ai_generated=True))(_table())
    assert out.column("status").to_pylist() == ["filtered_image", "success", "success", "success",
                                                 "failed_to_download"]
    assert out.column("error_message").to_pylist()[0] == "provenance: AI-generated (its c2pa digital source type)"
    out = FilterProvenance(ImageFilterConfig(licenses=["cc-by", "cc0"]))(_table())
    assert out.column("status").to_pylist() == ["success", "success", "filtered_image", "filtered_image",
                                                 "failed_to_download"]
    assert out.column("error_message").to_pylist()[2:4] == ["provenance: licence cc-by-nc not in cc-by,cc0",
                                                            "provenance: licence unknown not in cc-by,cc0"]
    assert FilterProvenance(ImageFilterConfig())(_table()).equals(_table())  # off by default


def test_curation_reapplies():
    strict = FiltersConfig(image=ImageFilterConfig(licenses=["cc0"], exclude_ai_generated=True))
    assert needs_curation(strict) and not needs_curation(FiltersConfig())
    (once,), _ = curate([_table()], strict)
    assert once.column("status").to_pylist().count("filtered_image") == 3  # b (cc0, not AI) stays
    (again,), _ = curate([once], FiltersConfig(image=ImageFilterConfig(licenses=["cc-by-nc"])))
    assert again.column("status").to_pylist() == ["filtered_image", "filtered_image", "success", "filtered_image",
                                                   "failed_to_download"]


def test_unknown_licence_is_a_config_error():
    assert check_licenses(["CC-BY", " cc0 "]) == ["cc-by", "cc0"]
    with pytest.raises(ConfigError, match="unknown licence gpl"):
        check_licenses(["gpl"])


@pytest.fixture()
def server():
    s = FileServer({
        "/by.jpg": (with_xmp("jpeg", xmp_packet(web_statement=BY)), "image/jpeg"),
        "/gen.jpg": (with_xmp("jpeg", xmp_packet(web_statement=BY, source_type="trainedAlgorithmicMedia"), seed=1),
                     "image/jpeg"),
        "/plain.jpg": (with_xmp("jpeg", None, seed=2), "image/jpeg"),
        "/no.png": (with_xmp("png", xmp_packet(data_mining="DMI-PROHIBITED-GENAIMLTRAINING"), seed=3), "image/png"),
    }).start()
    yield s
    s.stop()


def test_download_cli(server, tmp_path, capsys):
    inp = tmp_path / "urls.csv"
    with open(inp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for p in ("/by.jpg", "/gen.jpg", "/plain.jpg", "/no.png"):
            w.writerow([server.url(p), f"picture {p}"])
    out = tmp_path / "out"
    rc = main(["--log-format", "text", "download", str(inp), "--out", str(out), "--allow-private-networks",
               "--image-size", "32", "--workers", "1", "--exclude-ai-generated",
               "--licenses", "cc-by,cc0"])
    assert rc in (0, None)
    rows = {r["url"].rsplit("/", 1)[-1]: r for r in pq.read_table(next(out.glob("*.parquet"))).to_pylist()}
    assert rows["by.jpg"]["status"] == "success" and rows["by.jpg"]["license"] == BY
    assert rows["gen.jpg"]["error_message"] == "provenance: AI-generated (its iptc digital source type)"
    assert rows["plain.jpg"]["error_message"] == "provenance: licence unknown not in cc-by,cc0"
    assert rows["no.png"]["status"] == "failed_to_download"
    assert "DMI-PROHIBITED-GENAIMLTRAINING" in rows["no.png"]["error_message"]
    # the report counts the refusals, AI-generated and licences of the kept samples
    import json

    capsys.readouterr()
    assert main(["stats", str(out), "--json"]) == 0
    prov = json.loads(capsys.readouterr().out)["provenance"]
    assert prov["refused"] == {"IPTC Data Mining (image XMP)": 1}
    assert prov["ai_generated_kept"] == 0 and prov["licences_kept"] == {"cc-by": 1}  # gen.jpg was filtered
    assert main(["stats", str(out)]) == 0
    assert "refused: IPTC Data Mining (image XMP)" in capsys.readouterr().out
    from clipcrawl.pipelines.inspect.browse import BrowseData

    assert BrowseData(str(out)).info()["provenance"] == {
        "refused": {"IPTC Data Mining (image XMP)": 1}, "ai_generated_kept": 0, "licences_kept": {"cc-by": 1}}
    before = len(server.requests)
    assert main(["download", str(inp), "--out", str(tmp_path / "o2"), "--licenses", "gpl"]) == 2
    assert len(server.requests) == before  # refused before any request


def test_card_lines_count_refusals_ai_and_licences():
    from collections import Counter

    from clipcrawl.filters.provenance import licence_breakdown, refusal_kind
    from clipcrawl.pipelines.inspect.card import _fmt_optouts

    msgs = {
        "download: data mining prohibited by the image's IPTC metadata (XMP plus:DataMining DMI-PROHIBITED)": 3,
        "download: ai_training notAllowed by the image's C2PA manifest (training-mining assertion; validation Valid)": 2,
        "download: disallowed for AI training by http://a.example/ai.txt (Spawning ai.txt)": 4,
        "download: Use of image disallowed by X-Robots-Tag directive (noml)": 1,
        "download: image metadata refused unread, so its terms are unknown: XMP declares a DTD": 1,
        "download: HTTP 404 Not Found": 7,
    }
    refused = Counter()
    for m, n in msgs.items():
        if refusal_kind(m):
            refused[refusal_kind(m)] += n
    assert refused == {"ai.txt": 4, "IPTC Data Mining (image XMP)": 3, "C2PA/CAWG training-mining (image manifest)": 2,
                       "X-Robots-Tag noml": 1, "image metadata unreadable (refused conservatively)": 1}
    lic = licence_breakdown([BY, BY, "CC0 1.0", None, "(c) me"])
    assert lic == {"cc-by": 2, "cc0": 1, "none": 1, "unknown": 1}
    info = {"config": {"download": {"respect_ai_txt": False}}, "pages": Counter(), "reasons": Counter(),
            "provenance": {"refused": refused, "ai_generated": 5, "licences": lic}}
    text = "\n".join(_fmt_optouts(info))
    assert "(IPTC/PLUS Data Mining, C2PA/CAWG training-mining): honoured; Spawning ai.txt: NOT honoured" in text
    assert "  - refused by ai.txt: 4 image(s)" in text
    assert "AI-generated according to their IPTC/C2PA metadata: 5 kept sample(s)" in text
    assert "cc-by 2, cc0 1, none 1, unknown 1" in text


def test_licences_checked_by_the_config_model():
    from clipcrawl.schemas.config import RunConfig, parse_config

    assert ImageFilterConfig(licenses=["CC-BY ", "cc0"]).licenses == ["cc-by", "cc0"]
    with pytest.raises(ConfigError, match=r"filters.image.licenses: unknown licence gpl"):
        parse_config({"dataset": "d", "sources": {"urls": {"path": "x.csv"}},
                      "filters": {"image": {"licenses": ["gpl"]}}}, RunConfig, "run.yaml")

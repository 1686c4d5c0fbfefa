"""``download`` refusing private/loopback addresses says how to allow them (issue 25 item 9): the default
differs from img2dataset mode's, so the summary names ``--allow-private-networks``."""

from __future__ import annotations

import pyarrow.parquet as pq

from clipcrawl.cli import main

from .server import make_image


def _download(capsys, urls, out, *extra):
    code = main(["--log-format", "text", "download", str(urls), "--out", str(out), "--image-size", "16",
                 "--workers", "1", "--timeout", "3", *extra])
    return code, capsys.readouterr().out


def test_every_url_refused_as_private_says_how_to_allow_it(server, tmp_path, capsys):
    server.files["priv.jpg"] = make_image(40, 30)
    port = server.url("/").split(":")[2].split("/")[0]
    urls = tmp_path / "urls.txt"  # a loopback literal and a name that resolves to loopback
    urls.write_text(f"{server.url('/f/priv.jpg')}\nhttp://localhost:{port}/f/priv.jpg\n")
    code, out = _download(capsys, urls, tmp_path / "refused")
    assert code == 0
    errors = pq.read_table(tmp_path / "refused" / "00000.parquet").column("error_message").to_pylist()
    assert all("not public" in e or "non-public" in e for e in errors), errors
    assert ("every URL refused as a private/loopback address: `download` refuses them by default "
            "(fix: add --allow-private-networks") in out

    urls.write_text(f"{server.url('/f/priv.jpg')}\nftp://example.com/x.jpg\n")  # one refused for another reason
    code, out = _download(capsys, urls, tmp_path / "mixed")
    assert code == 0 and "1 of 2 URLs refused as a private/loopback address" in out

    code, out = _download(capsys, urls, tmp_path / "allowed", "--allow-private-networks")
    assert code == 0 and "private/loopback" not in out
    assert pq.read_table(tmp_path / "allowed" / "00000.parquet").column("status").to_pylist()[0] == "success"

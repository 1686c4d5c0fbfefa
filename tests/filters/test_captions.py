"""clipcrawl.base.captions: ftfy repair, lengths, offline language identification."""

import socket

import pyarrow as pa

from clipcrawl.base.captions import (
    annotate_captions,
    caption_words,
    fix_text,
    identify_language,
    language_model_path,
)


def test_fix_text_and_lengths():
    assert fix_text("MÃ¼nchenbryggeriet  in\nStockholm") == "Münchenbryggeriet in Stockholm"
    assert fix_text(None) == "" and fix_text("  plain   ascii ") == "plain ascii"
    assert fix_text("“Café” in München") == "“Café” in München"  # clean text is left as written
    assert caption_words("A dog, a cat & 2 birds") == 6


def test_language_model_ships_in_a_package_and_needs_no_network(monkeypatch):
    assert language_model_path() is not None and language_model_path().stat().st_size < 2_000_000

    def no_network(*a, **k):
        raise AssertionError("network use during language identification")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert identify_language("Un paciente de COVID-19 en la unidad de cuidados intensivos")[0] == "es"
    assert identify_language("EIN HUND LÄUFT AM STRAND ENTLANG")[0] == "de"  # lowercased first
    assert identify_language("1234 -- 56") == (None, 0.0)


def test_annotate_fills_only_nulls():
    t = pa.table({"caption": ["a dog on a beach", "der Hund am Strand", None],
                  "language": pa.array(["xx", None, None], pa.string())})
    out = annotate_captions(t)
    assert out.column("language").to_pylist() == ["xx", "de", None]
    assert out.column("caption_chars").to_pylist() == [16, 18, None]
    assert out.column("caption_words").to_pylist() == [5, 4, None]


def test_texts_are_cut_to_the_maximum():
    """Issue 24: a 2 MB alt text was kept whole; now at most MAX_TEXT_CHARS characters, read in bounded time."""
    import time

    from clipcrawl.base.captions import MAX_TEXT_CHARS, cut_text

    t = time.process_time()
    assert fix_text("word " * 400_000) == ("word " * 1000)[:MAX_TEXT_CHARS]
    assert fix_text("MÃ¼nchen " * 300_000) == ("München " * 1000)[:MAX_TEXT_CHARS].rstrip()  # ftfy on the start only
    assert time.process_time() - t < 2
    assert fix_text(" " * 10**6 + "a  dog") == ""  # a text is read from its first 4 x MAX_TEXT_CHARS characters
    assert cut_text("a\n b   c", limit=3) == "a b" and cut_text("ab  c", limit=3) == "ab" and fix_text("x" * 5, 4) == "xxxx"
    assert len(fix_text("é" * (MAX_TEXT_CHARS + 1))) == MAX_TEXT_CHARS

import pyarrow as pa
import pytest

from clipcrawl.filters.text import FilterCaptions, caption_problem
from clipcrawl.schemas.config import TextFilterConfig


@pytest.mark.parametrize(
    "caption,reason",
    [
        ("a red circle on a white background", None),
        ("Eiffel tower at night", None),
        ("东京塔の夜景", None),
        (None, "empty caption"),
        ("   ", "empty caption"),
        ("ab", "caption shorter than 3 characters"),
        ("Image", "generic caption"),
        ("logo.", "generic caption"),
        ("IMG_1234.JPG", "caption is a file name"),
        ("DSC 0042", "caption is a file name"),
        ("https://example.com/x.png", "caption is a URL"),
        ("12345", "caption has no letters"),
        ("x" * 3000, "caption longer than 2000 characters"),
    ],
)
def test_caption_problem(caption, reason):
    assert caption_problem(caption, TextFilterConfig()) == reason


def test_stage_marks_only_success_rows():
    t = pa.table({
        "caption": ["a blue square", "IMG_1.jpg", "photo", "a buy now banner ad"],
        "status": ["success", "success", "failed_to_download", "success"],
        "error_message": [None, None, "download: HTTP 404", None],
    })
    out = FilterCaptions(TextFilterConfig(deny_patterns=[r"(?i)buy now"]))(t)
    assert out.column("status").to_pylist() == ["success", "filtered_text", "failed_to_download", "filtered_text"]
    assert out.column("error_message").to_pylist()[1] == "text: caption is a file name"
    assert out.column("error_message").to_pylist()[2] == "download: HTTP 404"
    assert "deny pattern" in out.column("error_message").to_pylist()[3]


@pytest.mark.parametrize(
    "caption,reason",
    [
        ("Credit Charlie Rubin para The New York Times", "caption is a credit line"),
        ("CREDIT: Jane Doe", "caption is a credit line"),
        ("Photo: AP", "caption is a credit line"),
        ("Foto: dpa/Picture Alliance", "caption is a credit line"),
        ("Photograph by Jane Doe - Reuters", None),  # "by" without a separator: a sentence, kept
        ("Image courtesy of NASA", None),
        ("© 2020 Reuters", "caption is a credit line"),
        ("Getty Images", "caption is a credit line"),
        ("Kevin Frayer/Getty Images", "caption is a credit line"),
        ("Photos of the new harbour bridge", None),
        ("Un paciente de COVID-19 en la unidad de cuidados intensivos", None),
        ("Reuters journalists at work in the newsroom", None),
    ],
)
def test_credit_lines(caption, reason):
    assert caption_problem(caption, TextFilterConfig()) == reason


def test_language_rule_exact_keep_set():
    t = pa.table({
        "caption": ["a small dog runs across the green lawn", "ein kleiner Hund läuft über den grünen Rasen",
                    "un petit chien court sur la pelouse verte", "a cat", "12345"],
        "status": ["success"] * 5,
        "error_message": [None] * 5,
    })
    out = FilterCaptions(TextFilterConfig(languages=["EN"], min_words=0, drop_generic=False))(t)
    assert out.column("status").to_pylist() == ["success", "filtered_text", "filtered_text", "success", "filtered_text"]
    msgs = out.column("error_message").to_pylist()
    assert msgs[1] == "text: caption language de not in en" and msgs[4] == "text: caption language unknown not in en"


def test_a_2mb_caption_is_filtered_with_its_reason():
    """Issue 24: the caption maximum (``max_chars``, 2,000: COYO-700M drops alt texts over 1,000) holds for
    any length, the language rule included, and the row keeps its reason."""
    import time

    table = pa.table({"caption": ["word " * 400_000, "a red bicycle against a wall"],
                      "status": ["success", "success"], "error_message": [None, None]})
    t = time.process_time()
    out = FilterCaptions(TextFilterConfig(languages=["en"])).process(table)
    assert time.process_time() - t < 5
    assert out.column("status").to_pylist() == ["filtered_text", "success"]
    assert out.column("error_message").to_pylist() == ["text: caption longer than 2000 characters", None]

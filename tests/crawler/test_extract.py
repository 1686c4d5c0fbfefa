"""extract_page rules on small crafted pages, and charset decoding."""

from __future__ import annotations

import pytest

from clipcrawl.crawler.charset import codec_for, decode_html, header_charset, meta_charset
from clipcrawl.crawler.extract import extract_page

URL = "https://www.example.com/news/story.html"


def _pairs(html: str, url: str = URL, **kw):
    page = extract_page(html.encode("utf-8"), url, **kw)
    return [(p.url, p.caption, p.caption_source) for p in page.pairs], page


def test_image_url_rules():
    pairs, page = _pairs(
        "<img src=a.jpg alt='  Hello \n world &eacute; &amp; co '>"
        "<img src=/px.gif width=1 height=1 alt=pixel><img src=/px2.gif width='2px' alt=pixel>"
        "<img src='data:image/gif;base64,R0' data-src=//cdn.example.com/lazy.jpg alt=lazy>"
        "<img src=placeholder.gif data-lazy-src=/lazy2.jpg alt=lazy2>"
        "<img src=s.jpg srcset='s.jpg 300w, l.jpg 1200w, m.jpg 600w' alt=widths>"
        "<img src=s.jpg data-srcset='d1.jpg 1x, d3.jpg 3x' alt=densities>"
        "<picture><source type=image/svg+xml srcset=v.svg><source type=image/avif srcset='big.avif 3000w'>"
        "<source type=image/webp srcset='w.webp 2000w'><img src=p.jpg alt=pic></picture>"
        "<img src=icon.svg alt=svg><img src=ICON.SVG?x=1 alt=svg2><img src='blob:https://x/1' alt=blob>"
        "<img src=nocap.jpg><img src=nocap2.jpg alt='   '>"
        "<img src=t.jpg title=tt><img src=r.jpg aria-label=aa>"
        "<noscript><img src=/news/a.jpg alt='Hello world é & co'></noscript>"
    )
    base = "https://www.example.com/news/"
    assert pairs == [
        (base + "a.jpg", "Hello world é & co", "alt"),
        ("https://cdn.example.com/lazy.jpg", "lazy", "alt"),
        ("https://www.example.com/lazy2.jpg", "lazy2", "alt"),
        (base + "l.jpg", "widths", "alt"),
        (base + "d3.jpg", "densities", "alt"),
        (base + "w.webp", "pic", "alt"),
        (base + "t.jpg", "tt", "title"),
        (base + "r.jpg", "aa", "aria-label"),
    ]  # the noscript duplicate of the first image is dropped (same URL and caption)
    assert page.n_images == 16 and page.n_uncaptioned == 2


def test_figcaption_base_href_dims():
    pairs, page = _pairs(
        "<html><head><base href='https://static.example.org/img/'></head><body>"
        "<figure><div><img src=f.jpg alt=alt1 width=800 height=600></div>"
        "<figcaption> The <b>bold</b>\n caption </figcaption></figure>"
        "<figure><img src=g.jpg alt='only alt'><figcaption> </figcaption></figure>"
        "<figure><img src=h.jpg alt=''><figcaption>Credit<span>Jane Doe</span></figcaption></figure>"
        "<a href='page2.html'>p2</a></body></html>")
    assert pairs == [("https://static.example.org/img/f.jpg", "alt1", "alt"),
                     ("https://static.example.org/img/g.jpg", "only alt", "alt"),
                     ("https://static.example.org/img/h.jpg", "Credit Jane Doe", "figcaption")]
    assert [(p.alt, p.figcaption, p.title) for p in page.pairs] == [
        ("alt1", "The bold caption", None), ("only alt", None, None), (None, "Credit Jane Doe", None)]
    assert (page.pairs[0].width, page.pairs[0].height) == (800, 600)
    assert page.links == ["https://static.example.org/img/page2.html"]
    assert page.base_url == "https://static.example.org/img/"


def test_links_title_language():
    _, page = _pairs(
        "<html lang='pt_br'><head><title>  Uma &amp; página </title></head><body>"
        "<a href='/a#x'>a</a><a href='/a'>dup</a><a href='HTTPS://WWW.EXAMPLE.COM:443/a'>dup</a>"
        "<a href='/nf' rel='NoFollow noopener'>nf</a><a href='mailto:x@y.z'>m</a><a href='javascript:go()'>j</a>"
        "<a>no href</a><map><area href='/area'></map><a href='//other.org/x'>o</a></body></html>")
    assert page.links == ["https://www.example.com/a", "https://www.example.com/area", "https://other.org/x"]
    assert page.title == "Uma & página" and page.language == "pt-BR"
    assert not page.nofollow and not page.noai


@pytest.mark.parametrize(
    "meta,noai,nofollow",
    [
        ('<meta name="robots" content="noai">', "noai", False),
        ('<meta name="ROBOTS" content="index, NoImageAI">', "noimageai", False),
        ('<meta name="robots" content="noindex, follow">', "noindex", False),
        ('<meta name="robots" content="noimageindex">', "noimageindex", False),
        ('<meta name="robots" content="none">', "none", True),
        ('<meta name="robots" content="nofollow">', None, True),
        ('<meta name="clipcrawl" content="noai, nofollow">', "noai", True),
        ('<meta name="otherbot" content="noai, nofollow">', None, False),
        ('<meta name="robots" content="index, follow">', None, False),
    ],
)
def test_meta_robots(meta, noai, nofollow):
    pairs, page = _pairs(f"<html><head>{meta}</head><body><img src=a.jpg alt=x><a href=/l>l</a></body></html>")
    assert page.noai_reason == noai and page.noai is (noai is not None)
    assert page.nofollow is nofollow
    assert (pairs == []) is (noai is not None) and page.n_withheld == (1 if noai else 0)
    assert (page.links == []) is nofollow


def test_meta_robots_with_our_ua_token():
    _, page = _pairs('<meta name="mybot" content="noai"><img src=a.jpg alt=x>', ua_token="mybot")
    assert page.noai


# ---------------------------------------------------------------- charsets
FR = "Crème brûlée à la française, déjà dorée près du château où l'été dure."


@pytest.mark.parametrize(
    "body,ctype,want_text,want_charset,how",
    [
        (FR.encode("cp1252"), "text/html; charset=ISO-8859-1", FR, "windows-1252", "header"),
        (b'<meta charset="latin1">' + FR.encode("cp1252"), None, FR, "windows-1252", "meta"),
        (b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">' + "Привет".encode("cp1251"),
         "text/html", "Привет", "windows-1251", "meta"),
        ("日本語のテキスト".encode("shift_jis"), "text/html;charset=Shift_JIS", "日本語のテキスト", "shift_jis", "header"),
        ("中文网页".encode("gb18030"), 'text/html; charset="gb2312"', "中文网页", "gb18030", "header"),
        # valid UTF-8 wins over a wrong declaration (common with server-default charsets)
        (FR.encode("utf-8"), "text/html; charset=iso-8859-1", FR, "utf-8", "utf-8"),
        (b"\xef\xbb\xbf" + FR.encode("utf-8"), "text/html; charset=windows-1251", FR, "utf-8", "bom"),
        (b"plain ascii", "text/html; charset=windows-1252", "plain ascii", "windows-1252", "header"),
        (b"plain ascii", None, "plain ascii", "utf-8", "utf-8"),
        (b'<meta charset="utf-16">ascii', None, "<meta charset=\"utf-16\">ascii", "utf-8", "meta"),
    ],
)
def test_decode_html(body, ctype, want_text, want_charset, how):
    text, charset, got_how = decode_html(body, ctype)
    assert want_text in text and charset == want_charset and got_how == how


@pytest.mark.parametrize(
    "lang,codec,text",
    [
        ("fr", "cp1252", FR + " Voilà une recette très simple: la crème brûlée, déjà célèbre."),
        ("pl", "cp1250", "Zażółć gęślą jaźń. Ziemniaki na szóstej, surówka na dziesiątej. Jak żyć w mieście?"),
        ("lt", "cp1257", "Lietuvos Respublika yra nepriklausoma demokratinė respublika. Įstatymų leidžiamoji "
                         "valdžia priklauso Seimui, čia gražūs ežerai."),
        ("tr", "cp1254", "Türkiye Cumhuriyeti'nin başkenti Ankara'dır. İstanbul en kalabalık şehirdir."),
        ("ru", "cp1251", "Это простая страница на русском языке. Мы проверяем, правильно ли определяется кодировка."),
        ("ja", "shift_jis", "これは日本語で書かれた簡単なページです。文字コードの自動判定が正しく動作するかを確認します。"),
    ],
)
def test_detection_uses_the_page_language(lang, codec, text):
    body = f"<html lang={lang}><body><p>{text}</p></body></html>".encode(codec)
    decoded, _, how = decode_html(body)
    assert text in decoded and how == "detected"


def test_charset_helpers():
    assert header_charset("text/html; charset=UTF-8") == "UTF-8" and header_charset("text/html") is None
    assert meta_charset(b"<head><meta charset='euc-jp'>") == "euc-jp"
    assert codec_for("ISO-8859-1") == "cp1252" and codec_for("x-unknown") is None
    assert codec_for("utf-16le", from_meta=True) == "utf-8"


def test_alt_first_candidates_kept_and_mojibake_repaired():
    """One pair per image; the alt is the caption, the other candidates stay in their columns;
    junk alts stay the caption (the text rules flag them later); ftfy repairs mojibake."""
    pairs, page = _pairs(
        "<figure><img src=a.jpg alt='IMG_1234.jpg' title='A title'><figcaption>Photo: AP</figcaption></figure>"
        "<img src=b.jpg alt='MÃ¼nchenbryggeriet in Stockholm' title='t'>"
        "<img src=c.jpg title='  only   title '>")
    assert pairs == [(URL.rsplit("/", 1)[0] + "/a.jpg", "IMG_1234.jpg", "alt"),
                     (URL.rsplit("/", 1)[0] + "/b.jpg", "Münchenbryggeriet in Stockholm", "alt"),
                     (URL.rsplit("/", 1)[0] + "/c.jpg", "only title", "title")]
    assert [(p.alt, p.figcaption, p.title) for p in page.pairs] == [
        ("IMG_1234.jpg", "Photo: AP", "A title"), ("Münchenbryggeriet in Stockholm", None, "t"),
        (None, None, "only title")]


def test_news_page_gives_its_alt_texts(testdata):
    """The real NYT (Spanish) page of the shared testdata: every descriptive alt is a caption,
    never replaced by the photographer credit of the figcaption; credits are space-joined."""
    body = (testdata / "html" / "readability" / "nytimes-5.html").read_bytes()
    page = extract_page(body, "https://www.nytimes.com/es/")
    by_alt = {p.alt: p for p in page.pairs if p.alt}
    covid = "Un paciente de COVID-19 en la unidad de cuidados intensivos de un hospital de La Mesa, California."
    assert by_alt[covid].caption == covid and by_alt[covid].caption_source == "alt"
    assert by_alt[covid].figcaption == "Credit Etienne Laurent/EPA vía Shutterstock"
    assert all(p.caption == p.alt for p in page.pairs if p.alt)
    assert not any("CreditCharlie" in (p.figcaption or "") for p in page.pairs)
    assert any(p.figcaption == "Credit Charlie Rubin para The New York Times" for p in page.pairs)

"""URL normalisation and registered domains (offline public-suffix snapshot)."""

from __future__ import annotations

import pytest

from clipcrawl.crawler.srcset import Candidate, best_candidate, parse_srcset
from clipcrawl.crawler.urls import host_of, normalize_url, registered_domain, same_site


@pytest.mark.parametrize(
    "url,base,want",
    [
        ("HTTP://Example.COM:80/a", None, "http://example.com/a"),
        ("https://example.com:443", None, "https://example.com/"),
        ("http://example.com:8080/x", None, "http://example.com:8080/x"),
        ("https://example.com:80/x", None, "https://example.com:80/x"),  # 80 is not https's default
        ("http://example.com/a#frag", None, "http://example.com/a"),
        ("http://example.com/a/./b/../c", None, "http://example.com/a/c"),
        ("http://example.com/a/b/..", None, "http://example.com/a/"),
        ("http://example.com/../../x", None, "http://example.com/x"),
        ("http://example.com/%7euser/%2f%41", None, "http://example.com/~user/%2FA"),  # unreserved decoded
        ("http://example.com/a b/ä?q=ü v", None, "http://example.com/a%20b/%C3%A4?q=%C3%BC%20v"),
        ("http://example.com/100%", None, "http://example.com/100%25"),
        ("http://example.com/?", None, "http://example.com/"),
        ("http://bücher.de/", None, "http://xn--bcher-kva.de/"),
        ("http://BÜCHER.de./", None, "http://xn--bcher-kva.de/"),
        ("http://a_b.example.com/", None, "http://a_b.example.com/"),
        ("http://[::1]:80/x", None, "http://[::1]/x"),
        ("  http://example.com/\ta\n ", None, "http://example.com/a"),
        ("http://example.com\\a\\b?x=\\", None, "http://example.com/a/b?x=%5C"),
        ("http://u:p@Example.com/", None, "http://u:p@example.com/"),
        ("../i.png", "http://a.com/x/y/z.html", "http://a.com/x/i.png"),
        ("//cdn.a.com/i.jpg", "https://a.com/", "https://cdn.a.com/i.jpg"),
        ("/i.jpg", "https://a.com/x/y?q#f", "https://a.com/i.jpg"),
        ("?p=2", "https://a.com/x/y?q", "https://a.com/x/y?p=2"),
        ("#top", "https://a.com/x/y?q", "https://a.com/x/y?q"),
        ("z", "http://a.com", "http://a.com/z"),
        ("mailto:a@b.c", None, None),
        ("javascript:void(0)", "http://a.com/", None),
        ("data:image/png;base64,AAAA", "http://a.com/", None),
        ("ftp://a.com/x", None, None),
        ("http://a.com:99999/", None, None),
        ("http://:80/", None, None),
        ("http:///x", None, None),
        ("", "http://a.com/", None),
    ],
)
def test_normalize_url(url, base, want):
    assert normalize_url(url, base) == want


def test_normalize_is_idempotent_and_sorts_query_on_request():
    u = normalize_url("HTTP://A.com:80/./x/%7e/?b=2&a=1&&c#f")
    assert normalize_url(u) == u
    assert normalize_url("http://a.com/?b=2&a=1", sort_query=True) == "http://a.com/?a=1&b=2"
    assert normalize_url("http://a.com/?b=2&a=1") == "http://a.com/?b=2&a=1"  # order matters by default


def test_registered_domain_offline():
    assert registered_domain("www.bbc.co.uk") == "bbc.co.uk"
    assert registered_domain("a.b.example.com") == "example.com"
    assert registered_domain("WWW.Example.COM.") == "example.com"
    assert registered_domain("user.github.io") == "user.github.io"  # private suffixes are sites
    assert registered_domain("127.0.0.1") == "127.0.0.1"
    assert registered_domain("127.0.0.1:8080") == "127.0.0.1"
    assert registered_domain("localhost") == "localhost"
    assert registered_domain("[::1]") == "[::1]"
    assert host_of("http://u:p@a.b.com:81/x") == "a.b.com"
    assert same_site("img.example.com", {"example.com"}) and not same_site("example.org", {"example.com"})
    assert same_site("127.0.0.1", {"127.0.0.1"}) and not same_site("localhost", {"127.0.0.1"})


def test_srcset():
    assert parse_srcset("a.jpg 300w, b.jpg 1200w,c.jpg") == [
        Candidate("a.jpg", 300), Candidate("b.jpg", 1200), Candidate("c.jpg")]
    # commas inside URLs (image CDNs), trailing commas, density descriptors, junk descriptors
    assert parse_srcset("https://x/w_300,h_200/a.jpg 1x, https://x/w_600,h_400/a.jpg 2x") == [
        Candidate("https://x/w_300,h_200/a.jpg", None, 1.0), Candidate("https://x/w_600,h_400/a.jpg", None, 2.0)]
    assert parse_srcset("a.jpg, b.jpg 1.5x") == [Candidate("a.jpg"), Candidate("b.jpg", None, 1.5)]
    assert parse_srcset("a.jpg 2q, b.jpg 0w") == []
    order = best_candidate([(True, Candidate("x1", None, 1.0)), (True, Candidate("w800", 800)),
                            (True, Candidate("x3", None, 3.0)), (False, Candidate("avif", 4000))])
    assert order == ["w800", "x3", "x1", "avif"]  # width beats density; a preferred type beats size

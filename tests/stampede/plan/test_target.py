"""The one canonical target: parsed once, strictly; what parsers read differently is refused; resolved once."""

from __future__ import annotations

import socket

import pytest

from stampede.plan.target import TargetInvalid, disagreement, parse_target, readings, resolve


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        pytest.param("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1", id="plain"),
        pytest.param("HTTP://LocalHost.:8000/v1/", "http://localhost:8000/v1", id="case-trailing-dot-slash"),
        pytest.param("https://staging.example.com/v1", "https://staging.example.com:443/v1", id="default-port-explicit"),
        pytest.param("http://[::1]:8000/v1", "http://[::1]:8000/v1", id="ipv6"),
        pytest.param("http://[0:0:0:0:0:0:0:1]:8000", "http://[::1]:8000", id="ipv6-compressed"),
        pytest.param("http://Bücher.example/v1", "http://xn--bcher-kva.example:80/v1", id="idna"),
        pytest.param("http://127.0.0.1:8000", "http://127.0.0.1:8000", id="no-path"),
    ],
)
def test_a_plain_url_is_rebuilt_canonical(raw, canonical):
    target = parse_target(raw)
    assert target.url == canonical
    assert parse_target(target.url) == target  # the canonical form parses to itself


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the trick: urllib.parse reads 127.0.0.1, urllib3 (requests, HttpUser) reads prod.example.com
        pytest.param("http://prod.example.com\\@127.0.0.1:8000/v1", "backslash", id="backslash-userinfo"),
        pytest.param("http://prod.example.com\\.127.0.0.1:8000/v1", "backslash", id="backslash-host"),
        pytest.param("http://127.0.0.1:8000@prod.example.com/v1", "user name or password", id="userinfo"),
        pytest.param("http://user:secret@127.0.0.1:8000/v1", "user name or password", id="credentials"),
        pytest.param("http://prod.example.com#@127.0.0.1/v1", "query or fragment", id="fragment-at"),
        pytest.param("http://prod.example.com?@127.0.0.1/v1", "query or fragment", id="query-at"),
        pytest.param("http://prod.exa\tmple.com/v1", "whitespace or a control character", id="tab-stripped-by-urllib"),
        pytest.param("http://127.0.0.1:8000\n/v1", "whitespace or a control character", id="newline"),
        pytest.param(" http://127.0.0.1:8000/v1", "whitespace", id="leading-space"),
        pytest.param("http://127.0.0.1:8000/v1\u200b", "control character", id="zero-width"),
        pytest.param("http://127.1:8000/v1", "not a plain dotted quad", id="short-ipv4"),
        pytest.param("http://0x7f.0.0.1:8000/v1", "not a plain dotted quad", id="hex-ipv4"),
        pytest.param("http://2130706433:8000/v1", "not a plain dotted quad", id="integer-ipv4"),
        pytest.param("http://0177.0.0.1:8000/v1", "not a plain dotted quad", id="octal-ipv4"),
        pytest.param("http://foo.123:8000/v1", "not a plain dotted quad", id="numeric-last-label"),
        pytest.param("http://[::ffff:127.0.0.1]:8000/v1", "IPv4-mapped", id="mapped-ipv6"),
        pytest.param("http://[fe80::1%25eth0]:8000/v1", "zone id", id="zone-id"),
        pytest.param("http://0.0.0.0:8000/v1", "unspecified", id="unspecified"),
        pytest.param("http://ｌｏｃａｌｈｏｓｔ:8000/v1", "maps to localhost under IDNA", id="fullwidth"),
        pytest.param("http://a_b.example:8000/v1", "letters, digits and inner hyphens", id="underscore"),
        pytest.param("http://127.0.0.1:8000:9000/v1", "more than one ':'", id="two-ports"),
        pytest.param("http://127.0.0.1:/v1", "is not a number", id="empty-port"),
        pytest.param("http://127.0.0.1:08000/v1", "no leading zeros", id="leading-zero-port"),
        pytest.param("http://127.0.0.1:65536/v1", "is not from 1 to 65535", id="port-too-big"),
        pytest.param("http://127.0.0.1:8000/a/../v1", "'..' segment", id="dot-segment"),
        pytest.param("http://127.0.0.1:8000/a%2e%2e/v1", "needs %-encoding", id="encoded-dot-segment"),
        pytest.param("http://127.0.0.1:8000//v1", "empty", id="double-slash"),
        pytest.param("http:/127.0.0.1:8000/v1", "does not start with http", id="one-slash"),
        pytest.param("//127.0.0.1:8000/v1", "does not start with http", id="scheme-relative"),
        pytest.param("ftp://127.0.0.1/v1", "is not an http(s) URL", id="ftp"),
        pytest.param("file:///etc/passwd", "is not an http(s) URL", id="file"),
        pytest.param("", "no URL given", id="empty"),
    ],
)
def test_anything_else_is_refused_in_one_line_naming_the_field_and_the_fix(raw, expected):
    with pytest.raises(TargetInvalid) as refused:
        parse_target(raw)
    text = str(refused.value)
    assert text.startswith("target: ") and expected in text and "; fix: " in text and "\n" not in text


def test_the_parser_net_sees_the_disagreements_the_rules_refuse_first():
    """Without the backslash and whitespace rules the net alone would refuse these: parsers read them differently."""
    backslash = disagreement("http://prod.example.com\\@127.0.0.1:8000/v1")
    assert "urllib.parse reads http://127.0.0.1:8000/v1" in backslash and "urllib3 reads http://prod.example.com" in backslash
    assert disagreement("http://prod.exa\tmple.com/v1") is not None  # urllib strips the tab, others refuse it
    assert disagreement("http://127.0.0.1:8000/v1") is None
    assert set(readings("http://127.0.0.1:8000/v1")) >= {"urllib.parse", "urllib3", "httpx", "yarl"}


def test_the_field_is_named_as_the_caller_says():
    with pytest.raises(TargetInvalid, match=r"^environments.staging.base_urls\[0\]: "):
        parse_target("http://u:p@h.example/v1", field="environments.staging.base_urls[0]")


def _answers(*addresses: str):
    def resolver(host, port, **_kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
    return resolver


def test_resolved_once_and_only_loopback_literals_and_localhost_are_local():
    assert resolve(parse_target("http://127.0.0.5:8000/v1")).addresses == ("127.0.0.5",)
    assert resolve(parse_target("http://127.0.0.5:8000/v1")).is_local
    assert resolve(parse_target("http://[::1]:8000/v1")).is_local
    assert resolve(parse_target("http://localhost:8000/v1"), resolver=_answers("127.0.0.1", "::1")).is_local
    # a name that resolves to loopback today is not "local": DNS may say otherwise tomorrow
    sneaky = resolve(parse_target("http://sneaky.example.invalid:8000/v1"), resolver=_answers("127.0.0.1"))
    assert sneaky.addresses == ("127.0.0.1",) and not sneaky.is_local
    assert sneaky.egress_policy() == {"addresses": ["127.0.0.1:8000"], "names": {"sneaky.example.invalid": ["127.0.0.1"]}}


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        pytest.param((), "resolves to no address", id="nothing"),
        pytest.param(("0.0.0.0",), "the unspecified address", id="unspecified"),
    ],
)
def test_a_name_that_resolves_badly_is_refused(addresses, expected):
    with pytest.raises(TargetInvalid, match=expected):
        resolve(parse_target("http://x.example.invalid/v1"), resolver=_answers(*addresses))


def test_localhost_that_is_not_loopback_is_refused():
    with pytest.raises(TargetInvalid, match="localhost resolves to 10.0.0.9, 127.0.0.1, not only to loopback"):
        resolve(parse_target("http://localhost:8000/v1"), resolver=_answers("127.0.0.1", "10.0.0.9"))


def test_an_unresolvable_name_is_refused_with_the_fix():
    with pytest.raises(TargetInvalid, match="does not resolve"):
        resolve(parse_target("http://no-such-host.invalid/v1"))

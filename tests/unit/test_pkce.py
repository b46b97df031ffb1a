"""PKCE and return paths."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from myi.auth import pkce


def test_verifiers_are_fresh_and_within_rfc_7636() -> None:
    verifiers = {pkce.new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for v in verifiers:
        assert 43 <= len(v) <= 128 and re.fullmatch(r"[A-Za-z0-9\-._~]+", v)


def test_the_challenge_is_s256_of_the_verifier() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    # RFC 7636, appendix B
    assert pkce.challenge_of(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    digest = hashlib.sha256(verifier.encode()).digest()
    assert pkce.challenge_of(verifier) == base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/", "/stats", "/stats?range=4w#top", "/a/b/c"])
def test_relative_paths_are_kept(path: str) -> None:
    assert pkce.safe_return_to(path) == path


def test_a_missing_return_path_means_home() -> None:
    assert pkce.safe_return_to(None) == "/" and pkce.safe_return_to("") == "/"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "evil.example",
        "javascript:alert(1)",
        "/ok\r\nSet-Cookie: x=1",
        "/" + "a" * 600,
        "/\u3000/evil.example",  # an ideographic space: not sent as a header, or read as "//"
        "/\t/evil.example",  # browsers drop tabs and newlines: "//evil.example"
        "/\n/evil.example",
        "/\x00/evil.example",
        "/\x7f",
        "/\x85/evil.example",
        "/\u2028/evil.example",
        "/ /evil.example",
        "/stats\\..\\x",
        "/caf\u00e9",
    ],
)
def test_anything_that_could_leave_the_site_is_refused(target: str) -> None:
    assert pkce.safe_return_to(target) is None


@pytest.mark.parametrize("path", ["/caf%C3%A9", "/stats?q=a%20b&x=~!$'()*+,;=:@", "/%2F%2Fevil.example"])
def test_percent_encoded_paths_are_kept(path: str) -> None:
    assert pkce.safe_return_to(path) == path

"""What `redact` and `safe_url` leave of secrets in error text: only what an operator needs."""

from __future__ import annotations

import time

import pytest

from certctl_notify.redact import redact, safe_url, url_secrets


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/…"),
    ("http://127.0.0.1:8080/hooks/T000/SECRETTOKEN?key=abc123", "http://127.0.0.1:8080/…"),
    ("https://user:password@hooks.example/path", "https://hooks.example/…"),
    ("https://user:p@ss@hooks.example/path", "https://hooks.example/…"),  # an unencoded "@" in the password
    ("https://hooks.example?token=abc123", "https://hooks.example/…"),
    ("https://hooks.example#frag", "https://hooks.example/…"),
    ("HTTPS://Hooks.Example/x", "HTTPS://Hooks.Example/…"),
    ("https://[2001:db8::1]:8443/x", "https://[2001:db8::1]:8443/…"),
    ("ftp://user:pw0rd@ftp.example/secret", "ftp://ftp.example/…"),
    ("file:///etc/passwd", "file:///…"),
    ("not a url", "[url]"),
    ("", "[url]"),
])
def test_safe_url_keeps_only_scheme_and_host(url, shown):
    # Given a URL that may carry credentials or a token, when made safe, then only scheme and host remain
    assert safe_url(url) == shown


def test_redact_replaces_each_secret():
    # Given an error text holding two configured secrets
    text = "auth failed for key R0UTING-KEY-123 with secret whsec_c2VjcmV0"
    # When redacted, then neither secret is left and the rest reads the same
    assert redact(text, ["R0UTING-KEY-123", "whsec_c2VjcmV0"]) == (
        "auth failed for key [redacted] with secret [redacted]"
    )


def test_redact_hides_every_urls_path_query_and_credentials():
    # Given text with URLs of several schemes, one with a password
    text = "POST https://u:pw@hooks.example/T0/B1/tok?x=1 failed; broker redis://:hunter22@redis:6379/0 down"
    # When redacted with no secrets listed
    result = redact(text)
    # Then hosts remain for the operator and nothing after them does
    assert result == "POST https://hooks.example/… failed; broker redis://redis:6379/… down"


def test_redact_keeps_the_quotes_around_a_url_in_a_json_body():
    # Given a JSON error body echoing the URL, when redacted, then the JSON punctuation survives
    assert redact('{"url": "https://hooks.example/secret-path"}') == '{"url": "https://hooks.example/…"}'


def test_longer_secrets_are_replaced_before_the_shorter_ones_inside_them():
    # Given a short secret that is a prefix of a longer one, listed first
    text = "token abcd-efgh-ijkl"
    # When redacted, then the longer one is gone entirely, no tail left behind
    assert redact(text, ["abcd", "abcd-efgh-ijkl"]) == "token [redacted]"


def test_very_short_or_empty_secrets_are_not_replaced():
    # Given secrets too short to be meaningful (they would shred ordinary words), when redacted,
    # then the text is unchanged
    assert redact("a bc def", ["", "a", "bc", "def", None]) == "a bc def"


def test_url_secrets_cover_the_parts_a_peer_may_echo():
    # Given a webhook URL with a token in its path and query and a password
    url = "https://user:pw0rd@hooks.example/hooks/T000/SECRETTOKEN?key=abc123&sig=a%2Fb%2Bc"
    # When an error echoes only the path, only one query value, the password, or a decoded value
    text = "no route /hooks/T000/SECRETTOKEN; bad key abc123; pass pw0rd; sig a/b+c"
    result = redact(text, url_secrets(url))
    # Then none of them survive
    for secret in ("SECRETTOKEN", "abc123", "pw0rd", "a/b+c", "/hooks/T000"):
        assert secret not in result


def test_url_secrets_of_no_url_is_empty():
    # Given no configured URL, when its secrets are listed, then there are none (and nothing fails)
    assert url_secrets(None) == () and url_secrets("") == ()


def test_redact_stays_fast_on_a_large_hostile_body():
    # Given a 64 KB peer body with no URL in it but long runs of URL-ish characters
    bodies = ["E" * 65536, "a." * 32768, "x" * 65535 + ":", "http:" * 13000]
    started = time.monotonic()
    # When each is redacted, then it takes milliseconds, not the seconds of a backtracking regex
    for body in bodies:
        redact(body, ["SECRETTOKEN"])
    assert time.monotonic() - started < 0.5

"""Settings are read once from the environment; a malformed value stops start-up naming the variable."""

from __future__ import annotations

import pytest

from certctl_notify.environment import load_settings, parse_duration
from certctl_notify.errors import ConfigError


@pytest.mark.parametrize("text, seconds", [("50ms", 0.05), ("60s", 60), ("2m", 120), ("1h", 3600), ("90", 90),
                                           ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text, "X") == pytest.approx(seconds)


def test_defaults_are_the_documented_production_schedule_on_embedded_storage():
    settings = load_settings({})
    assert (settings.retry.base_seconds, settings.retry.cap_seconds, settings.retry.max_attempts) == (60, 3600, 5)
    assert settings.retry.jitter is False
    assert settings.sweep.interval_seconds == 120 and settings.sweep.batch_size == 1000
    assert settings.database_url.startswith("sqlite:///") and settings.broker_url.startswith("sqla+sqlite:///")
    assert settings.embedded
    assert settings.worker.intake_consumer_timeout_seconds == 30
    assert load_settings({"CERTCTL_INTAKE_CONSUMER_TIMEOUT": "2m"}).worker.intake_consumer_timeout_seconds == 120


@pytest.mark.parametrize(
    "name, value",
    [
        ("CERTCTL_NOTIFICATION_RETRY_BASE", "soon"),
        ("CERTCTL_NOTIFICATION_RETRY_CAP", "-1m"),
        ("CERTCTL_NOTIFICATION_MAX_ATTEMPTS", "five"),
        ("CERTCTL_NOTIFICATION_MAX_ATTEMPTS", "0"),
        ("CERTCTL_NOTIFICATION_RETRY_JITTER", "maybe"),
        ("CERTCTL_NOTIFICATION_RETRY_INTERVAL", "0"),
        ("CERTCTL_OUTBOUND_ALLOW", "10.0.0.0/33"),
        ("CERTCTL_WEBHOOK_SECRET", "not base64!!"),
        ("CERTCTL_WEBHOOK_HEADERS", "[1, 2]"),
        ("CERTCTL_WEBHOOK_URL", "ftp://example.com/hook"),
        ("CERTCTL_API_KEYS", "ops:key:root"),
        ("CERTCTL_LOG_FORMAT", "xml"),
        ("CERTCTL_CLAIM_LEASE", "10s"),
        ("CERTCTL_INTAKE_CONSUMER_TIMEOUT", "500ms"),
        ("CERTCTL_INTAKE_CONSUMER_TIMEOUT", "half a minute"),
    ],
)
def test_malformed_values_name_their_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_cap_below_base_is_refused():
    with pytest.raises(ConfigError, match="CERTCTL_NOTIFICATION_RETRY_CAP"):
        load_settings({"CERTCTL_NOTIFICATION_RETRY_BASE": "2h", "CERTCTL_NOTIFICATION_RETRY_CAP": "1h"})


def test_values_are_converted():
    settings = load_settings({
        "CERTCTL_NOTIFICATION_RETRY_BASE": "50ms", "CERTCTL_NOTIFICATION_RETRY_JITTER": "true",
        "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32, hooks.internal",
        "CERTCTL_API_KEYS": "ops:k1:admin,dash:k2:read",
        "CERTCTL_WEBHOOK_HEADERS": '{"X-Team": "pki"}',
    })
    assert settings.retry.base_seconds == pytest.approx(0.05) and settings.retry.jitter
    assert settings.outbound.allow == ("127.0.0.1/32", "hooks.internal")
    assert settings.outbound.allows("anything", "127.0.0.1") and settings.outbound.allows("hooks.internal", "10.1.1.1")
    assert not settings.outbound.allows("other", "10.1.1.1")
    assert [(k.name, k.scope) for k in settings.api.keys] == [("ops", "admin"), ("dash", "read")]
    assert "k1" not in repr(settings.api.keys)
    assert settings.webhook.headers == (("X-Team", "pki"),)


SMTP_CREDENTIALS = {"CERTCTL_SMTP_HOST": "relay.internal", "CERTCTL_SMTP_USERNAME": "alerts",
                    "CERTCTL_SMTP_PASSWORD": "s3cret"}


def test_smtp_auth_over_a_plain_connection_is_refused():
    # Given SMTP credentials with TLS turned off, When the settings are loaded
    with pytest.raises(ConfigError) as refused:
        load_settings({**SMTP_CREDENTIALS, "CERTCTL_SMTP_TLS": "none"})
    # Then start-up stops, naming the variables and how to allow it; the password is not echoed
    message = str(refused.value)
    for name in ("CERTCTL_SMTP_TLS", "CERTCTL_SMTP_USERNAME", "CERTCTL_SMTP_PASSWORD",
                 "CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH=true"):
        assert name in message
    assert "s3cret" not in message


def test_smtp_auth_over_a_plain_connection_is_allowed_when_asked_for():
    # Given the same settings, on a trusted network, with the opt-in set
    settings = load_settings({**SMTP_CREDENTIALS, "CERTCTL_SMTP_TLS": "none",
                              "CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH": "true"})
    # Then they load, and the channel is told it may authenticate in clear
    assert (settings.smtp.tls, settings.smtp.username, settings.smtp.allow_plaintext_auth) == ("none", "alerts", True)
    # And the opt-in is a boolean like any other
    with pytest.raises(ConfigError, match="CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH"):
        load_settings({**SMTP_CREDENTIALS, "CERTCTL_SMTP_TLS": "none", "CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH": "maybe"})


@pytest.mark.parametrize("env", [
    {"CERTCTL_SMTP_HOST": "relay.internal", "CERTCTL_SMTP_TLS": "none"},  # a plain relay without AUTH
    {**SMTP_CREDENTIALS, "CERTCTL_SMTP_TLS": "starttls"},  # AUTH after STARTTLS
    {**SMTP_CREDENTIALS, "CERTCTL_SMTP_TLS": "implicit"},  # AUTH inside TLS
])
def test_smtp_settings_without_auth_in_clear_load(env):
    # Given no credentials, or credentials sent only inside TLS, Then the settings load as before
    settings = load_settings(env)
    assert settings.smtp.tls == env["CERTCTL_SMTP_TLS"] and settings.smtp.allow_plaintext_auth is False

"""Producer input is validated at the edge: a clear error naming the field, nothing written."""

from __future__ import annotations

import pytest

from certctl_notify.alerts import parse_alert
from certctl_notify.errors import ValidationError

GOOD = {"type": "ExpirationWarning", "channel": "Webhook", "message": "cert expires in 7 days"}


def test_defaults_fill_subject_and_severity():
    alert = parse_alert(GOOD)
    assert alert.subject == "Expiration warning"
    assert alert.severity == "warning"
    assert parse_alert({**GOOD, "type": "Revocation"}).severity == "critical"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"type": "Expired"}, "type"),
        ({"channel": "Fax"}, "channel"),
        ({"message": "   "}, "message"),
        ({"message": None}, "message"),
        ({"message": "x" * 100_001}, "message"),
        ({"severity": "urgent"}, "severity"),
        ({"subject": "hi\r\nBcc: x@evil"}, "subject"),
        ({"channel": "Email", "recipient": "not-an-address"}, "recipient"),
        ({"colour": "red"}, "colour"),
        ({"certificate_id": 7}, "certificate_id"),
        ({"message": "nul\x00byte"}, "message"),
    ],
)
def test_bad_fields_are_named(change, field):
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ValidationError) as err:
        parse_alert(data)
    assert err.value.field == field


def test_channel_and_channels_are_exclusive_and_channels_deduplicate():
    with pytest.raises(ValidationError):
        parse_alert({**GOOD, "channels": ["Slack"]})
    without_channel = {k: v for k, v in GOOD.items() if k != "channel"}
    alert = parse_alert(without_channel | {"channels": ["Webhook", "Slack", "Webhook"]})
    assert [c.value for c in alert.channels] == ["Webhook", "Slack"]


def test_multi_channel_rows_share_the_dedupe_key_and_get_their_own_ids():
    from datetime import UTC, datetime

    alert = parse_alert({**{k: v for k, v in GOOD.items() if k != "channel"}, "channels": ["Webhook", "Slack"],
                         "dedupe_key": "exp-42"})
    rows = alert.rows(datetime.now(UTC))
    assert [(r["dedupe_key"], r["channel"]) for r in rows] == [("exp-42", "Webhook"), ("exp-42", "Slack")]
    assert len({r["id"] for r in rows}) == 2

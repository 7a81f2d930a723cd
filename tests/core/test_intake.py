"""Intake against real PostgreSQL: a dedupe key names one alert per channel, whatever the call shape."""

from __future__ import annotations

from sqlalchemy import text

from certctl_notify import intake

ALERT = {"type": "RenewalFailure", "message": "renewal of shop.example.com failed", "recipient": "ops@example.test"}


class Recorded:
    """Remembers what it was asked to publish."""

    def __init__(self):
        self.published: list[tuple[str, int]] = []

    def dispatch(self, notification_id: str, attempt: int, dispatched_at=None) -> None:
        self.published.append((notification_id, attempt))


def rows_by_channel(sessions) -> dict[str, int]:
    with sessions.begin() as s:
        return dict(s.execute(text("SELECT channel, count(*) FROM notification_events GROUP BY channel")).all())


def test_a_key_sent_to_one_channel_then_to_several_stores_that_channel_once(sessions):
    # Given an alert with dedupe key "k2" to the Webhook channel
    dispatcher = Recorded()
    [first] = intake.enqueue_alert(sessions, dispatcher, {**ALERT, "channel": "Webhook", "dedupe_key": "k2"})
    # When the same key comes again naming Webhook and Email
    again = intake.enqueue_alert(sessions, dispatcher, {**ALERT, "channels": ["Webhook", "Email"], "dedupe_key": "k2"})
    # Then the Webhook alert is the first one (not stored, not published again) and only Email is new
    assert [(r.row.channel, r.created) for r in again] == [("Webhook", False), ("Email", True)]
    assert again[0].row.id == first.row.id
    assert rows_by_channel(sessions) == {"Webhook": 1, "Email": 1}
    assert [nid for nid, _ in dispatcher.published] == [first.row.id, again[1].row.id]


def test_a_key_sent_to_several_channels_then_to_one_stores_it_once(sessions):
    # Given "k1" to Webhook and Slack, When "k1" comes again to Slack alone
    dispatcher = Recorded()
    first = intake.enqueue_alert(sessions, dispatcher, {**ALERT, "channels": ["Webhook", "Slack"], "dedupe_key": "k1"})
    [again] = intake.enqueue_alert(sessions, dispatcher, {**ALERT, "channel": "Slack", "dedupe_key": "k1"})
    # Then it is the Slack row stored the first time
    assert (again.created, again.row.id) == (False, first[1].row.id)
    assert rows_by_channel(sessions) == {"Webhook": 1, "Slack": 1}
    assert len(dispatcher.published) == 2


def test_a_key_of_one_channel_never_stands_for_another_channels_alert(sessions):
    # Given key "k3:Webhook" used for a Slack alert
    dispatcher = Recorded()
    intake.enqueue_alert(sessions, dispatcher, {**ALERT, "channel": "Slack", "dedupe_key": "k3:Webhook"})
    # When "k3" names Webhook and Email
    results = intake.enqueue_alert(sessions, dispatcher, {**ALERT, "channels": ["Webhook", "Email"],
                                                          "dedupe_key": "k3"})
    # Then both are new alerts of their own channels, and the Slack row is not handed back in their place
    assert [(r.row.channel, r.created) for r in results] == [("Webhook", True), ("Email", True)]
    assert rows_by_channel(sessions) == {"Slack": 1, "Webhook": 1, "Email": 1}

"""The console's activity chart, read back as XML: bar heights, hover titles, labels, escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from api.console.chart import activity_svg, channels_with_activity
from certctl_notify.store import HourBucket, OutcomeCounts

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 11, 28, 13, tzinfo=UTC)
COLOURS = {"chart-sent": "#2e7d32", "chart-retry": "#f59e0b", "chart-dead": "#c62828"}


def day(**by_hour: dict[str, OutcomeCounts]) -> list[HourBucket]:
    """24 hourly buckets from 13:00 UTC; ``h14={"Slack": OutcomeCounts(...)}`` fills the 14:00 one."""
    return [HourBucket(START + timedelta(hours=i), by_hour.get(f"h{(START.hour + i) % 24:02d}", {}))
            for i in range(24)]


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))


def segments(svg: ET.Element) -> list[ET.Element]:
    return list(svg.find(f"{SVG}g[@class='chart-bars']"))


def axis_texts(svg: ET.Element) -> list[str]:
    return [t.text for t in svg.find(f"{SVG}g[@class='chart-axis']").iter(f"{SVG}text")]


BUSY = day(
    h14={"Slack": OutcomeCounts(sent=12, retry=3, dead=1), "Email": OutcomeCounts(sent=4)},
    h20={"Email": OutcomeCounts(sent=6, dead=2)},
    h12={"Webhook": OutcomeCounts(retry=5)},
)


def test_bars_stack_sent_retried_and_dead_with_heights_proportional_to_the_counts():
    svg = parse(activity_svg(BUSY))
    rects = segments(svg)
    # One segment per non-zero count, each coloured by its outcome as an attribute and a class
    assert [(r.get("class"), r.find(f"{SVG}title").text) for r in rects] == [
        ("chart-sent", "14:00–15:00 UTC: 16 sent, 3 retried, 1 dead"),
        ("chart-retry", "14:00–15:00 UTC: 16 sent, 3 retried, 1 dead"),
        ("chart-dead", "14:00–15:00 UTC: 16 sent, 3 retried, 1 dead"),
        ("chart-sent", "20:00–21:00 UTC: 6 sent, 0 retried, 2 dead"),
        ("chart-dead", "20:00–21:00 UTC: 6 sent, 0 retried, 2 dead"),
        ("chart-retry", "12:00–13:00 UTC: 0 sent, 5 retried, 0 dead"),
    ]
    assert all(r.get("fill") == COLOURS[r.get("class")] for r in rects)
    # Heights are one scale times the count, and each stack sits on the one below it
    counts = [16, 3, 1, 6, 2, 5]
    px_per_attempt = float(rects[0].get("height")) / 16
    for rect, count in zip(rects, counts, strict=True):
        assert float(rect.get("height")) == pytest.approx(count * px_per_attempt, abs=0.02)
    for lower, upper in ((rects[0], rects[1]), (rects[1], rects[2]), (rects[3], rects[4])):
        assert float(upper.get("y")) + float(upper.get("height")) == pytest.approx(float(lower.get("y")), abs=0.02)
    # Bars go left to right in hour order, one slot per hour: 14:00 is the 2nd, 20:00 the 8th, 12:00 the last
    slot = (float(rects[3].get("x")) - float(rects[0].get("x"))) / 6
    assert float(rects[5].get("x")) - float(rects[0].get("x")) == pytest.approx(22 * slot, abs=0.02)


def test_the_axis_has_round_ticks_and_hour_labels_every_three_hours():
    texts = axis_texts(parse(activity_svg(BUSY)))
    # The tallest bar is 20, so 0, 10, 20 (2 to 4 round values)
    assert texts[:3] == ["0", "10", "20"]
    assert texts[3:] == ["13:00", "16:00", "19:00", "22:00", "01:00", "04:00", "07:00", "10:00"]


def test_the_label_sums_the_day_for_all_channels_or_one():
    every = parse(activity_svg(BUSY))
    assert every.get("role") == "img"
    assert every.get("aria-label") == "Last 24 hours, all channels: 22 sent, 8 retried, 3 dead"
    slack = parse(activity_svg(BUSY, channel="Slack"))
    assert slack.get("aria-label") == "Last 24 hours, Slack: 12 sent, 3 retried, 1 dead"
    assert [r.find(f"{SVG}title").text for r in segments(slack)] == ["14:00–15:00 UTC: 12 sent, 3 retried, 1 dead"] * 3


def test_the_legend_names_each_outcome_in_its_colour():
    legend = parse(activity_svg(BUSY)).find(f"{SVG}g[@class='chart-legend']")
    assert [(r.get("class"), r.get("fill")) for r in legend.iter(f"{SVG}rect")] == list(COLOURS.items())
    assert [t.text for t in legend.iter(f"{SVG}text")] == ["sent", "retried", "dead", "hours in UTC"]


def test_a_hostile_channel_name_comes_out_as_text():
    name = '<script>alert("x")</script>&"'
    markup = activity_svg(day(h14={name: OutcomeCounts(sent=1)}), channel=name)
    assert "<script>" not in markup and 'alert("x")' not in markup
    assert parse(markup).get("aria-label") == f"Last 24 hours, {name}: 1 sent, 0 retried, 0 dead"


@pytest.mark.parametrize("buckets", [day(), [], day()[:1]], ids=["quiet day", "no buckets", "one hour"])
def test_no_attempts_draws_an_empty_chart(buckets):
    svg = parse(activity_svg(buckets))
    assert segments(svg) == []
    assert axis_texts(svg)[:2] == ["0", "1"]
    assert svg.get("aria-label").endswith(": 0 sent, 0 retried, 0 dead")


def test_nothing_needs_script_or_inline_styles():
    # The console's Content-Security-Policy allows neither
    svg = parse(activity_svg(BUSY, width=300, height=120))
    assert (svg.get("width"), svg.get("viewBox")) == ("300", "0 0 300 120")
    for element in svg.iter():
        assert element.tag not in (f"{SVG}script", f"{SVG}style")
        assert "style" not in element.attrib and not any(a.startswith("on") for a in element.attrib)


def test_channels_with_activity_are_the_ones_with_attempts_by_name():
    quiet = day(h15={"Teams": OutcomeCounts()})
    assert channels_with_activity(BUSY + quiet) == ["Email", "Slack", "Webhook"]
    assert channels_with_activity([]) == []

"""bench/chaos.py, reduced: 300 alerts at 30/s (half through the API, half through a bare
``send_task("certctl_notify.enqueue")``) while a worker's main process is SIGKILLed every 3 s, a gunicorn
worker is SIGKILLed, Redis is FLUSHALLed and SIGKILLed and restarted empty, PostgreSQL is restarted and
beat is SIGKILLed. (The bench's kill race is left out here: tests/workers/test_intake_relay.py makes
its 40 tries on each broker with real workers.)

The bench starts everything it breaks itself (its own Redis, its own PostgreSQL cluster, its own
receiver, workers, beat and gunicorn, all on 127.0.0.1 and running this checkout's code) and never
touches the machine's shared PostgreSQL or Redis. It runs once for the module, as a user runs it; each
test asserts one thing a user of the service cares about on the figures it prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Small enough for the suite (65-90 s on 2 cores), every kind of failure included.
ARGS = ["--count", "300", "--rate", "30", "--kill-every", "3", "--sweep-interval", "1", "--sweep-grace", "3",
        "--drain-timeout", "60", "--kill-race-tries", "0", "--max-seconds", "200"]
#: The whole run is one fixture: its time counts against the first test of the module.
pytestmark = pytest.mark.timeout(260)


@pytest.fixture(scope="module")
def chaos() -> dict:
    """The figures of one reduced run (its final JSON line), with the text it printed under ``output``."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), *ARGS], cwd=ROOT,
                            capture_output=True, text=True, timeout=230)
    output = result.stdout[-8000:] + "\n--- stderr ---\n" + result.stderr[-6000:]
    if result.returncode != 0:
        pytest.fail(f"bench/chaos.py exited with {result.returncode}:\n{output}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["output"] = result.stdout[-8000:]
    return figures


def summary(figures: dict) -> str:
    return "\n" + figures["output"]


def test_no_acknowledged_alert_is_lost_when_workers_redis_postgresql_beat_and_the_api_are_killed(chaos):
    # "lost with the broker's data" (Celery intake sitting in Redis when the bench wiped it) is the one
    # expected loss of a broker without persistence; everything else acknowledged must be delivered or dead.
    # (A loss prints the kill or wipe nearest its acknowledgement.)
    assert chaos["drained"], summary(chaos)
    assert chaos["lost_unstored"] == 0, summary(chaos)
    assert chaos["lost_unfinished_rows"] == 0, summary(chaos)
    assert chaos["row_id_mismatches"] == 0, summary(chaos)
    # the counts the triggers keep survived every SIGKILL and the PostgreSQL restart exactly
    assert chaos["status_counts"]["maintained"] == chaos["status_counts"]["counted"], summary(chaos)


def test_no_worker_beat_or_api_exits_by_itself_when_redis_or_postgresql_restarts(chaos):
    # the README: "When Redis restarts or fails over, the worker reconnects by itself"
    assert chaos["unexpected_exits"] == [], summary(chaos) + "\n".join(chaos["unexpected_exit_logs"])


def test_nothing_is_marked_sent_that_the_receiver_did_not_accept(chaos):
    assert chaos["sent_without_2xx"] == 0, summary(chaos)
    assert chaos["delivered_not_sent"] == 0, summary(chaos)
    assert chaos["signatures_failed"] == 0 and chaos["signatures_verified"] == chaos["requests"], summary(chaos)


def test_every_dead_row_spent_its_whole_budget_of_five_attempts(chaos):
    assert chaos["dead_with_exactly_budget"] == chaos["dead"], summary(chaos)
    assert set(chaos["dead_retry_count"]) <= {str(chaos["budget"])}, summary(chaos)


def test_every_duplicate_is_explained_by_a_kill_and_carries_one_webhook_id(chaos):
    # The one documented way to send twice: a worker killed after a request left and before its outcome
    # was recorded; each killed worker had at most its pool's 2 sends in flight.
    assert chaos["duplicates_same_webhook_id"] == chaos["duplicates"], summary(chaos)
    assert chaos["duplicates"] <= 2 * chaos["worker_restarts"], summary(chaos)

"""Several hosts on one PostgreSQL and one broker: two workers under their own hostnames and data
directories, each with a beat of its own. Every alert is delivered once and the sweeps take turns."""

from __future__ import annotations

import re
import time

from certctl_notify import intake
from certctl_notify.publish import CeleryDispatcher
from tests.conftest import lose_every_message, wait_for
from tests.support.rows import row_of


def alert(key: str) -> dict:
    return {"type": "RenewalFailure", "channel": "Webhook", "message": f"renewal of {key} failed",
            "certificate_id": key}


def test_two_workers_with_two_beats_deliver_every_alert_once_and_sweep_one_at_a_time(
    sessions, receiver, make_env, start_worker, producer, broker_url, tmp_path
):
    # Given 30 stored alerts whose messages the broker lost, and 30 more arriving later, a third of
    # them failing once (their retries released by the beats)
    lost = [intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert(f"c-lost-{n}"))[0].row.id
            for n in range(30)]
    lose_every_message(broker_url)
    later = [f"c-later-{n}" for n in range(30)]
    for key in later[::3]:
        receiver.script(key, [503, 200])
    # When two hosts start side by side, each a worker and a beat with a data directory of its own
    hosts = [start_worker(make_env(CERTCTL_DATA_DIR=str(tmp_path / f"host{n}")), beat=True, wait=False)
             for n in range(2)]
    for host in hosts:
        host.wait_ready(host.is_ready, 30)
    for key in later:
        intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert(key))
    # Then every alert is delivered, each once (twice for those that failed once)
    keys = [f"c-lost-{n}" for n in range(30)] + later
    wait_for(lambda: all(row_of(sessions, i).status == "sent" for i in lost) and
             all(receiver.for_key(k) for k in keys), timeout=60, message="every alert delivered")
    time.sleep(1.5)  # a few more sweep ticks of both beats: nothing may be sent again
    expected = {key: 2 if key in later[::3] else 1 for key in keys}
    assert {key: len(receiver.for_key(key)) for key in keys} == expected
    # And the lost rows were re-dispatched once in all: two beats' sweeps never took the same row
    redispatched = sum(int(n) for host in hosts for n in re.findall(r"sweep re-dispatched (\d+) rows", host.log()))
    assert redispatched == 30, [line for host in hosts for line in host.log().splitlines() if "sweep" in line][-20:]
    # both beats ran, each keeping its own schedule, and each worker sent some of the alerts
    assert all(list(tmp_path.glob(f"worker{n}.beat*")) for n in range(2))
    assert all(re.search(r"via Webhook: sent", host.log()) for host in hosts)

"""Redis behind Sentinel: a master, a replica and a sentinel of the test's own; the master is killed in
the middle of a run of deliveries, the sentinel promotes the replica, and the worker and the API find
the new master by themselves with nothing lost and nothing sent twice."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import wait_for
from tests.support.api_server import GunicornProcess
from tests.support.sentinel import MASTER_NAME, SentinelCluster

ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
def cluster(tmp_path):
    cluster = SentinelCluster(tmp_path / "redis").start()
    yield cluster
    cluster.stop()


def post(api: GunicornProcess, key: str) -> str:
    answer = httpx.post(f"{api.url}/api/v1/notifications", headers=ADMIN, timeout=10, json={
        "type": "ExpirationWarning", "channel": "Webhook", "message": f"{key} expires", "certificate_id": key})
    assert answer.status_code == 202, answer.text
    return answer.json()["data"][0]["id"]


def test_a_sentinel_failover_mid_run_loses_nothing_and_everyone_reconnects(cluster, receiver, make_env, start_worker,
                                                                             tmp_path):
    # Given a worker (with beat) and the API on a sentinel:// broker
    env = make_env(CERTCTL_BROKER_URL=cluster.broker_url, CERTCTL_BROKER_SENTINEL_MASTER=MASTER_NAME)
    worker = start_worker(env, beat=True)
    api = GunicornProcess(env, tmp_path / "api.log", workers=1).start()
    try:
        keys = [f"c-failover-{n}" for n in range(40)]
        wait_for(lambda: post(api, "c-warm") and receiver.for_key("c-warm"), message="a first delivery")
        # When alerts keep arriving while the master is killed (after the tenth) and the replica promoted
        old_master = cluster.master.port
        killed_at: list[float] = []

        def offer():
            for n, key in enumerate(keys):
                if n == 10:
                    cluster.master.kill()
                    killed_at.append(time.time())
                post(api, key)
                time.sleep(0.1)

        offering = threading.Thread(target=offer)
        offering.start()
        offering.join(60)
        wait_for(lambda: cluster.master_port() not in (None, old_master), timeout=30, message="the failover")
        # Then every alert is delivered exactly once, by the same worker process, through the new master
        wait_for(lambda: all(receiver.for_key(key) for key in keys), timeout=60,
                 message="every alert delivered after the failover")
        time.sleep(1)  # give a wrongly repeated delivery time to show up
        assert sorted(key for key in keys if len(receiver.for_key(key)) != 1) == []
        assert worker.proc.poll() is None
        after = [r.at for key in keys[10:] for r in receiver.for_key(key)]
        print(f"first delivery {min(after) - killed_at[0]:.2f} s after the master was killed")
        # And the API publishes to the new master itself (not left to the sweep): a new alert goes out at once
        started = time.monotonic()
        after_id = post(api, "c-after")
        wait_for(lambda: receiver.for_key("c-after"), timeout=5, message="a delivery through the new master")
        assert f"publish of {after_id}" not in api.log()
        print(f"an alert posted after the failover delivered in {time.monotonic() - started:.2f} s")
    finally:
        api.stop()

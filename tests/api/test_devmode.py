"""`certctl-notify dev --demo`: a newcomer's first minute, in a subprocess, on the embedded stack."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import wait_for

CLI = str(Path(sys.executable).with_name("certctl-notify"))
#: This checkout: the CLI script would otherwise import the package wherever the venv installed it from.
ROOT = str(Path(__file__).resolve().parents[2])


def start_dev(args: list[str], cwd: Path, env: dict, out) -> subprocess.Popen:
    """``certctl-notify ARGS`` as started from a terminal: SIGINT at its default even when this test runs
    in a background job (whose children inherit SIGINT ignored, and Ctrl-C would then do nothing)."""
    return subprocess.Popen([CLI, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def dev_environment(**overrides) -> dict:
    """This environment without its ``CERTCTL_*`` variables, then ``overrides``, running this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
    return {**env, **overrides, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))}


def stop(proc: subprocess.Popen, out) -> tuple[int, list[int]]:
    """Ctrl-C, as the user would: (exit code, pids of its process tree still running 10 s after it
    exited, which are then killed: a failed test must not leave a worker consuming later tests' queues)."""
    tree = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(10)
    finally:
        out.close()
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    return code, [child.pid for child in alive]


def test_dev_demo_shows_sent_and_dead_rows_within_a_minute_and_stops_cleanly(tmp_path):
    # Given a fresh directory with no PostgreSQL or Redis configured (embedded SQLite for both)
    env = dev_environment()
    out = open(tmp_path / "out.log", "w+")
    proc = start_dev(["dev", "--demo", "--port", "0"], tmp_path, env, out)
    try:
        # When it starts, it says where the API listens and which demo alerts it enqueued
        def log():
            return (tmp_path / "out.log").read_text()
        base = wait_for(lambda: re.search(r"API listening on (http://\S+)", log()), timeout=30,
                        message="the API address").group(1)
        ids = wait_for(lambda: dict(re.findall(r"demo: enqueued (notif_\w+) \((demo-\w+)", log())).__len__() == 4
                       and {key: nid for nid, key in re.findall(r"demo: enqueued (notif_\w+) \((demo-\w+)", log())},
                       timeout=30, message="four demo alerts")
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}

        def status(key):
            return httpx.get(f"{base}/api/v1/notifications/{ids[key]}").json()

        # Then within 60 s the healthy and the flaky alerts are sent and the broken ones are dead
        deadline = time.monotonic() + 60
        wait_for(lambda: status("demo-down")["status"] == "dead", timeout=deadline - time.monotonic(),
                 interval=1, message="demo-down to go dead")
        assert status("demo-api")["status"] == "sent"
        flaky = status("demo-flaky")
        assert (flaky["status"], flaky["retry_count"]) == ("sent", 2)
        gone = status("demo-gone")
        assert (gone["status"], gone["retry_count"]) == ("dead", 1)
        down = status("demo-down")
        assert down["retry_count"] == 5 and "HTTP 503" in down["last_error"]
        assert [a["outcome"] for a in down["attempts"]] == ["retry"] * 4 + ["dead"]
        # And it printed the console's address, where the dead letters are listed without any sign-in
        console = re.search(r"Console: (http://\S+)", log()).group(1)
        assert console == f"{base}/console/"
        page = httpx.get(f"{console}notifications?tab=dead")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert ids["demo-down"] in page.text and "Attempt 5/5" in page.text
        # And the data lives in a SQLite file under ./var
        assert (tmp_path / "var" / "certctl-notify.sqlite").exists()
    finally:
        # When the user presses Ctrl-C, everything stops cleanly
        code, left = stop(proc, out)
    assert (code, left) == (0, []), (tmp_path / "out.log").read_text()[-3000:]


def test_dev_starts_its_worker_with_the_configured_concurrency(tmp_path, make_env):
    # Given CERTCTL_WORKER_CONCURRENCY=3, on this test's PostgreSQL and Redis (on the embedded SQLite
    # broker the Workers view answers "unavailable")
    env = dev_environment(**make_env(CERTCTL_WORKER_CONCURRENCY=3))
    log_path = tmp_path / "out.log"
    out = open(log_path, "w+")
    proc = start_dev(["dev", "--port", "0"], tmp_path, env, out)
    try:
        # When `dev` is up and its worker answers the Workers view
        base = wait_for(lambda: re.search(r"API listening on (http://\S+)", log_path.read_text()), timeout=30,
                        message="the API address").group(1)

        def workers():
            view = httpx.get(f"{base}/api/v1/workers", headers={"Authorization": "Bearer read-key"}).json()
            return view["status"] == "ok" and view["workers"]

        [worker] = wait_for(workers, timeout=30, interval=0.2, message="the worker in the Workers view")
        # Then it is the worker `dev` started, with a prefork pool of three
        assert worker["pid"] in [child.pid for child in psutil.Process(proc.pid).children()]
        assert worker["pool"] == {"kind": "prefork", "size": 3}
        # And three pool processes really run, beside the beat `dev` embeds in the worker
        assert len(psutil.Process(worker["pid"]).children()) == 3 + 1
    finally:
        code, left = stop(proc, out)
    assert (code, left) == (0, []), log_path.read_text()[-3000:]

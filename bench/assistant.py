"""What an assistant and a terminal pay: the size of each MCP tool's result, and the CLI's start-up time.

    .venv/bin/python -m bench.assistant [--rows 50] [--runs 10]

It makes a throw-away ``certctl_bench_<random>`` database holding ``--rows`` dead Webhook/Slack/Email
notifications, each with five failed attempts and the kind of text production has (a ~150-character
message, an e-mail recipient, a 503 answer from a proxy as ``last_error``), claims a free db of the
machine's Redis, starts one ``certctl-notify worker`` (so ``list_workers`` has one to describe) and
serves the API on a thread. Then:

1. every MCP tool is called once through the SDK's own client (in-process transport, the same server
   ``certctl-notify mcp`` runs), with a page of ``--rows`` dead letters for ``list_notifications``; it
   prints each result's bytes (UTF-8) and rough tokens (bytes / 4, the usual estimate for English and
   JSON);
2. ``certctl-notify list --status dead`` (and ``--json``, and ``--help``) runs ``--runs`` times as a
   fresh process against that API: median and max wall time, start to exit.

The last line is one JSON object. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BenchError, ScratchDatabase, ScratchRedisDb, run_cleanup, run_guarded  # noqa: E402

CLI = str(Path(sys.executable).parent / "certctl-notify")
ERROR = ("HTTP 503 from https://hooks.example.com/…: upstream connect error or disconnect/reset before headers. "
         "reset reason: connection failure")
CHANNELS = ("Webhook", "Slack", "Email")


def seed(database_url: str, rows: int) -> None:
    from certctl_notify import store
    from certctl_notify.db import make_sessions
    from certctl_notify.model import Outcome
    from certctl_notify.store.attempts import finish_attempt, open_attempt

    sessions = make_sessions(database_url)
    start = datetime.now(UTC) - timedelta(hours=6)
    with sessions.begin() as s:
        for n in range(rows):
            created = start + timedelta(minutes=n)
            nid = f"notif_{n:032x}"
            store.insert_notification(s, {
                "id": nid, "type": "ExpirationWarning", "channel": CHANNELS[n % 3], "status": "dead",
                "recipient": f"pki-oncall+{n}@example.com", "severity": "warning", "retry_count": 5,
                "certificate_id": f"mc-api-{n}", "subject": f"Certificate api-{n}.example.com expires in 7 days",
                "message": (f"The certificate for api-{n}.example.com (mc-api-{n}, issuer Example Issuing CA 2) "
                            f"expires on 2026-12-11 at 00:00 UTC. Renew it or check the renewal job's logs."),
                "last_error": ERROR, "created_at": created, "updated_at": created + timedelta(minutes=15)})
            for attempt in range(1, 6):
                at = created + timedelta(minutes=2 ** attempt - 2)
                attempt_id = open_attempt(s, nid, attempt=attempt, now=at, worker="celery@worker-1",
                                                task_id=f"task-{n}", channel=CHANNELS[n % 3])
                finish_attempt(s, nid, attempt=attempt, task_id=f"task-{n}", now=at + timedelta(seconds=3),
                                     outcome=Outcome.DEAD if attempt == 5 else Outcome.RETRY, error_class="transient",
                                     error=ERROR, status_code=503, attempt_id=attempt_id, started_at=at)
    sessions.dispose()


def tool_sizes(api_url: str, rows: int) -> dict[str, int]:
    import anyio
    from mcp.client import Client

    from cli.api_client import ApiClient
    from cli.mcp_server import build_server

    calls = [("list_notifications", {"status": "dead", "per_page": rows}),
             ("get_notification", {"notification_id": f"notif_{0:032x}"}),
             ("read_text", {"notification_id": f"notif_{0:032x}", "field": "message"}),
             ("stats_summary", {}), ("list_workers", {}), ("bulk_requeue_dry_run", {}),
             ("bulk_requeue_status", {"job_id": "job_missing"})]
    sizes = {}

    async def run():
        async with Client(build_server(ApiClient(api_url, "admin-key"))) as client:
            listed = await client.list_tools()
            sizes["(tools/list: names, descriptions, schemas)"] = len(json.dumps(
                [t.model_dump(exclude_none=True) for t in listed.tools]).encode())
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                sizes[name + (" (an error)" if result.is_error else "")] = len(
                    "\n".join(c.text for c in result.content).encode())

    anyio.run(run)
    return sizes


def wait_for_worker(api_url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = httpx.get(f"{api_url}/api/v1/workers", headers={"Authorization": "Bearer admin-key"}).json()
        if view["workers"]:
            return
        time.sleep(0.5)
    raise BenchError("the worker did not answer within 60 s")


def start_up(api_url: str, runs: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "CERTCTL_API_URL": api_url, "CERTCTL_API_KEY": "admin-key"}
    figures = {}
    for label, args in (("list --status dead", ["list", "--status", "dead"]),
                        ("list --status dead --json", ["list", "--status", "dead", "--json"]),
                        ("--help", ["--help"])):
        times = []
        for _ in range(runs + 1):
            began = time.perf_counter()
            done = subprocess.run([CLI, *args], env=env, capture_output=True, timeout=60)
            times.append((time.perf_counter() - began) * 1000)
            if done.returncode != 0:
                raise BenchError(f"certctl-notify {' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
        times = times[1:]  # the first run warms the page cache
        figures[label] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
    return figures


class AssistantBench:
    """The run under `run_guarded`: `run`, `cleanup`, `logs`."""

    def __init__(self, args):
        self.args = args
        self.failed = False
        self.db = ScratchDatabase()
        self.redis = ScratchRedisDb("bench.assistant", seconds=args.max_seconds + 60)
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-bench-assistant-"))
        self.worker: subprocess.Popen | None = None

    def logs(self):
        log = self.tmp / "worker.log"
        return [("worker.log", log.read_text(errors="replace")[-4000:])] if log.exists() else []

    def cleanup(self) -> None:
        def stop_worker():
            if self.worker is not None:
                self.worker.terminate()
                self.worker.wait(30)

        run_cleanup([("stop worker", stop_worker), ("release Redis db", self.redis.release),
                     ("drop database", self.db.drop)])
        if self.failed:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> None:
        from certctl_notify.environment import load_settings
        from tests.support.api_server import threaded_api

        args = self.args
        self.db.create()
        self.redis.claim()
        env = {"CERTCTL_DATABASE_URL": self.db.url, "CERTCTL_BROKER_URL": self.redis.url,
               "CERTCTL_DATA_DIR": str(self.tmp), "CERTCTL_API_KEYS": "ops:admin-key:admin",
               "CERTCTL_INSPECT_TIMEOUT": "1s"}
        seed(self.db.url, args.rows)
        with open(self.tmp / "worker.log", "wb") as log:
            self.worker = subprocess.Popen([CLI, "worker", "--concurrency", "1"], env={**os.environ, **env},
                                           stdout=log, stderr=subprocess.STDOUT)
        with threaded_api(load_settings(env)) as api_url:
            wait_for_worker(api_url)
            sizes = tool_sizes(api_url, args.rows)
            startup = start_up(api_url, args.runs)
        print(f"MCP tool results ({args.rows} dead notifications, 5 attempts each):")
        print(f"  {'tool':<46} {'bytes':>7} {'~tokens':>8}")
        for name, size in sizes.items():
            print(f"  {name:<46} {size:>7,} {size // 4:>8,}")
        print(f"CLI start-up, fresh process to exit, {args.runs} runs:")
        for label, figure in startup.items():
            print(f"  certctl-notify {label:<28} median {figure['median_ms']:>6.0f} ms   "
                  f"max {figure['max_ms']:>6.0f} ms")
        print(json.dumps({"rows": args.rows, "mcp_result_bytes": sizes, "cli_startup": startup}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-seconds", type=int, default=600)
    args = parser.parse_args()
    return run_guarded(AssistantBench(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())

"""`certctl-notify dev`: API, worker and beat in one command on the embedded (SQLite) stack."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import click
from werkzeug.serving import make_server

from api.app import create_app
from api.demo import DEMO_ALERTS, DEMO_ENVIRONMENT, DemoReceiver
from certctl_notify.environment import child_environment, load_settings
from certctl_notify.errors import ConfigError
from certctl_notify.intake import enqueue_alert
from certctl_notify.migrate import upgrade

#: Seconds the embedded worker gets to finish in-flight attempts on Ctrl-C.
SHUTDOWN_GRACE_SECONDS = 15


def _start_worker(env: dict, settings) -> subprocess.Popen:
    args = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--beat", "--pool", "prefork",
            "--concurrency", str(settings.worker.concurrency), "--queues", "celery,certctl.deliver,certctl.control",
            "--loglevel", "INFO", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    return subprocess.Popen(args, env=env)


def run_dev(*, demo: bool, port: int | None) -> int:
    """Run until Ctrl-C; returns the exit code."""
    overrides = {}
    if demo:
        receiver = DemoReceiver()
        overrides.update(DEMO_ENVIRONMENT, CERTCTL_WEBHOOK_URL=receiver.url)
    env = child_environment(overrides)
    if not env.get("CERTCTL_API_KEYS"):
        env.setdefault("CERTCTL_AUTH_TYPE", "none")  # a local try-out; production sets keys
    try:
        settings = load_settings(env)
        if settings.metrics_dir is None:  # one /metrics for the API and its worker: they share this directory
            env["CERTCTL_METRICS_DIR"] = str(settings.data_dir / "metrics")
            settings = load_settings(env)
    except ConfigError as exc:
        click.echo(f"certctl-notify: {exc}", err=True)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    app = create_app(settings)
    server = make_server(settings.api.host, settings.api.port if port is None else port, app, threaded=True)
    worker = _start_worker(env, settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    click.echo(f"certctl-notify dev: data {settings.database_url}, broker {settings.broker_url}")
    base = f"http://{settings.api.host}:{server.server_port}"
    click.echo(f"API listening on {base}", color=False)
    click.echo(f"Console: {base}/console/", color=False)
    sys.stdout.flush()
    if demo:
        deps = app.extensions["certctl"]  # outside a request: the Deps built by create_app
        for key, behaviour, alert_type, message in DEMO_ALERTS:
            [result] = enqueue_alert(deps.sessions, deps.dispatcher, {
                "type": alert_type, "channel": "Webhook", "certificate_id": key, "message": message})
            click.echo(f"demo: enqueued {result.row.id} ({key}: the receiver {behaviour})")
        click.echo(f"demo: watch them in the console at {base}/console/notifications "
                   f"(the dead one appears in about 25 s), or: curl {base}/api/v1/notifications/<id>")
        sys.stdout.flush()
    try:
        while not stop.is_set() and worker.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    if worker.poll() is not None:
        click.echo(f"certctl-notify dev: the worker exited with {worker.returncode}; see its log above", err=True)
    click.echo("certctl-notify dev: shutting down")
    server.shutdown()
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(SHUTDOWN_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
    if demo:
        receiver.stop()
    return 0 if worker.returncode in (0, -signal.SIGTERM, None) else worker.returncode

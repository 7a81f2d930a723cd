"""`certctl-notify doctor` against real services: the test database, Redis, a real worker, the local
receiver and a real SMTP relay (aiosmtpd) for the healthy case; closed ports, a silent peer, an empty
database and a malformed variable for the broken ones. Nothing is mocked, and nothing may be sent."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from sqlalchemy import create_engine

from certctl_notify.migrate import upgrade
from cli import main
from tests.conftest import BROKERS
from tests.support.receiver import RawPeer, Receiver

ROOT = Path(__file__).resolve().parents[1]
#: The token part of a Slack webhook URL: a secret that must never be printed.
SLACK_TOKEN = "xoxbSeCrEtT0kenNeverPrinted"
ROUTING_KEY = "pd-routing-key-never-printed"
OPSGENIE_KEY = "opsgenie-key-never-printed"
DB_PASSWORD = "db-password-never-printed"
CHANNELS = ("channel Email", "channel Webhook", "channel Slack", "channel Teams", "channel PagerDuty",
            "channel OpsGenie")
ORDER = ["configuration", "database", "schema", "broker", "workers", *CHANNELS]


def doctor(env: dict, *args: str):
    """Run ``certctl-notify doctor`` in-process with exactly ``env`` as the CERTCTL_* environment."""
    stray = {name: None for name in os.environ if name.startswith("CERTCTL_") and not name.startswith("CERTCTL_TEST_")}
    started = time.monotonic()
    result = CliRunner().invoke(main, ["doctor", *args], env={**stray, **env}, catch_exceptions=False)
    return result, time.monotonic() - started


def checks_of(result) -> dict[str, dict]:
    report = json.loads(result.stdout)
    assert list(report) == ["ok", "checks"]
    assert all(list(check) == ["name", "status", "detail", "fix"] for check in report["checks"])
    return {check["name"]: check for check in report["checks"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """An aiosmtpd handler that notes every mail transaction it is offered (doctor must offer none)."""

    def __init__(self):
        self.commands: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, options):
        self.commands.append(f"MAIL {address}")
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.commands.append(f"RCPT {address}")
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.commands.append("DATA")
        return "250 OK"


@pytest.fixture
def relay():
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=closed_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def test_importing_the_command_loads_neither_celery_nor_sqlalchemy():
    code = ("import sys, cli.doctor; print(sorted(m for m in ('celery', 'kombu', 'sqlalchemy', 'alembic', 'redis', "
            "'httpx', 'api.inspector') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_a_healthy_installation_passes_every_check_and_sends_nothing(make_env, start_worker, receiver, relay):
    # Given every channel configured against local peers the outbound allow-list admits (make_env allows
    # 127.0.0.1/32), the test database at head, Redis or RabbitMQ and a real worker
    mailbox, smtp_port = relay
    base = receiver.url.rsplit("/", 1)[0]
    env = make_env(
        CERTCTL_SMTP_HOST="127.0.0.1", CERTCTL_SMTP_PORT=smtp_port, CERTCTL_SMTP_TLS="none",
        CERTCTL_SLACK_WEBHOOK_URL=f"{base}/services/T000/B000/{SLACK_TOKEN}",
        CERTCTL_TEAMS_WEBHOOK_URL=f"{base}/teams/{SLACK_TOKEN}",
        CERTCTL_PAGERDUTY_ROUTING_KEY=ROUTING_KEY, CERTCTL_PAGERDUTY_URL=receiver.url,
        CERTCTL_OPSGENIE_API_KEY=OPSGENIE_KEY, CERTCTL_OPSGENIE_URL=receiver.url,
    )
    start_worker(env)
    # When the doctor runs
    result, _ = doctor(env, "--json", "--timeout", "1")
    # Then every check is ok, in order, and the exit status is 0
    assert result.exit_code == 0, result.output
    checks = checks_of(result)
    assert list(checks) == ORDER
    assert {name: c["status"] for name, c in checks.items()} == dict.fromkeys(ORDER, "ok"), result.stdout
    assert json.loads(result.stdout)["ok"] is True
    assert "1 worker answered, 1 consumes certctl.deliver" in checks["workers"]["detail"]
    assert checks["schema"]["detail"].startswith("at the latest revision")
    # and the peers were reached without being sent anything
    assert receiver.requests == []
    assert mailbox.commands == []
    assert "QUIT" in checks["channel Email"]["detail"]
    # and no secret is shown: Slack's and Teams' URLs only as scheme://host:port
    for secret in (SLACK_TOKEN, "/services/", ROUTING_KEY, OPSGENIE_KEY):
        assert secret not in result.output
    assert checks["channel Slack"]["detail"].startswith(f"{base} accepts connections")
    # and the default output says so in one aligned line per check
    text, _ = doctor(env, "--timeout", "1")
    lines = text.output.splitlines()
    assert text.exit_code == 0 and lines[-1] == "no problems found"
    assert all(line.startswith("✓ ") for line in lines[:-1]) and len(lines) == len(ORDER) + 1
    column = 2 + max(map(len, ORDER)) + 2  # mark, space, the longest name, two spaces: then every detail
    assert all(line[column - 1] == " " and line[column] != " " for line in lines[:-1])


def test_a_broken_installation_names_each_problem_with_its_fix(receiver, tmp_path):
    # Given: the database and the broker on closed ports, no worker, the relay on a closed port, the
    # webhook and Slack on 127.0.0.1 without CERTCTL_OUTBOUND_ALLOW (the SSRF guard refuses loopback)
    db_port, broker_port, smtp_port = closed_port(), closed_port(), closed_port()
    slack = receiver.url.replace("/hook", f"/services/T000/B000/{SLACK_TOKEN}")
    env = {
        "CERTCTL_DATA_DIR": str(tmp_path),
        "CERTCTL_DATABASE_URL": f"postgresql://certctl:{DB_PASSWORD}@127.0.0.1:{db_port}/certctl",
        "CERTCTL_BROKER_URL": f"redis://127.0.0.1:{broker_port}/0",
        "CERTCTL_SMTP_HOST": "127.0.0.1", "CERTCTL_SMTP_PORT": str(smtp_port), "CERTCTL_SMTP_TLS": "none",
        "CERTCTL_WEBHOOK_URL": receiver.url,
        "CERTCTL_SLACK_WEBHOOK_URL": slack,
    }
    # When the doctor runs
    result, elapsed = doctor(env, "--json", "--timeout", "1")
    # Then it fails, quickly, and names each problem with its fix
    assert result.exit_code == 1
    assert elapsed < 5
    report = json.loads(result.stdout)
    assert report["ok"] is False
    checks = checks_of(result)
    assert list(checks) == ORDER
    problems = {name for name, c in checks.items() if c["status"] == "problem"}
    assert problems == {"database", "broker", "workers", "channel Email", "channel Webhook", "channel Slack"}
    assert all(checks[name]["fix"] for name in problems)
    assert checks["configuration"]["status"] == "ok"
    assert checks["schema"]["status"] == "skipped"
    assert "CERTCTL_DATABASE_URL" in checks["database"]["fix"] and f"127.0.0.1:{db_port}" in checks["database"]["fix"]
    assert "Connection refused" in checks["database"]["detail"]
    assert "CERTCTL_BROKER_URL" in checks["broker"]["fix"] and f"127.0.0.1:{broker_port}" in checks["broker"]["fix"]
    assert "certctl-notify worker" in checks["workers"]["fix"]
    assert "CERTCTL_SMTP_PORT" in checks["channel Email"]["fix"]
    assert f"smtp://127.0.0.1:{smtp_port}" in checks["channel Email"]["detail"]
    for name in ("channel Webhook", "channel Slack"):
        assert "SSRF guard" in checks[name]["detail"] and "loopback" in checks[name]["detail"]
        assert "CERTCTL_OUTBOUND_ALLOW" in checks[name]["fix"]
    assert "CERTCTL_SLACK_WEBHOOK_URL" in checks["channel Slack"]["fix"]
    assert {checks[f"channel {n}"]["status"] for n in ("Teams", "PagerDuty", "OpsGenie")} == {"skipped"}
    assert "not configured" in checks["channel Teams"]["detail"]
    # and nothing secret is printed, nothing was sent
    for secret in (DB_PASSWORD, SLACK_TOKEN, "/services/"):
        assert secret not in result.output
    assert receiver.requests == []
    # and the default output shows the same with marks, fix lines and the count
    text, _ = doctor(env, "--timeout", "1")
    lines = text.output.splitlines()
    assert text.exit_code == 1 and lines[-1] == "6 problems"
    assert lines[0].startswith("✓ configuration") and lines[1].startswith("✗ database")
    assert any(line.startswith("- schema") for line in lines)
    assert sum(line.strip().startswith("fix:") for line in lines) == 6
    assert DB_PASSWORD not in text.output and SLACK_TOKEN not in text.output


def test_an_https_peer_is_checked_by_a_tls_handshake_as_the_channels_verify_it(tmp_path):
    # Given Teams on an https peer (allowed by the SSRF guard) whose certificate a private CA signed
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    peer = Receiver(tls=server).start()
    try:
        env = {"CERTCTL_DATA_DIR": str(tmp_path), "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32",
               "CERTCTL_DATABASE_URL": f"postgresql://certctl@127.0.0.1:{closed_port()}/certctl",
               "CERTCTL_BROKER_URL": f"redis://127.0.0.1:{closed_port()}/0",
               "CERTCTL_TEAMS_WEBHOOK_URL": f"{peer.url}/{SLACK_TOKEN}"}
        result, _ = doctor(env, "--json", "--timeout", "1")
    finally:
        peer.stop()
    # Then the handshake fails as a delivery's would (the channels trust the public CAs only), and the
    # peer got no request
    teams = checks_of(result)["channel Teams"]
    assert teams["status"] == "problem" and "TLS certificate is not trusted" in teams["detail"]
    assert "CERTCTL_TEAMS_WEBHOOK_URL" in teams["fix"]
    assert peer.requests == [] and SLACK_TOKEN not in result.output


def test_peers_that_accept_and_never_answer_are_reported_within_the_timeout(tmp_path):
    # Given a database, a broker and a relay that complete the TCP handshake and then say nothing
    silent = [RawPeer(accept=False).start() for _ in range(3)]
    try:
        env = {
            "CERTCTL_DATA_DIR": str(tmp_path),
            "CERTCTL_DATABASE_URL": f"postgresql://certctl@127.0.0.1:{silent[0].port}/certctl",
            "CERTCTL_BROKER_URL": f"redis://127.0.0.1:{silent[1].port}/0",
            "CERTCTL_SMTP_HOST": "127.0.0.1", "CERTCTL_SMTP_PORT": str(silent[2].port), "CERTCTL_SMTP_TLS": "none",
        }
        # When the doctor runs with a short timeout
        result, elapsed = doctor(env, "--json", "--timeout", "0.5")
    finally:
        for peer in silent:
            peer.stop()
    # Then it does not hang: libpq's connect_timeout (2 s at least) bounds the longest check
    assert elapsed < 4.5
    checks = checks_of(result)
    assert result.exit_code == 1
    assert {checks[name]["status"] for name in ("database", "broker", "workers", "channel Email")} == {"problem"}
    assert "within 0.5 s" in checks["channel Email"]["detail"]
    assert "timeout" in checks["broker"]["detail"].lower() or "within" in checks["broker"]["detail"]


def test_a_database_not_at_head_says_to_run_migrate(new_database, broker_url, tmp_path):
    # Given an empty PostgreSQL database, the real Redis broker and no worker
    url = new_database("postgresql")
    env = {"CERTCTL_DATA_DIR": str(tmp_path), "CERTCTL_DATABASE_URL": url, "CERTCTL_BROKER_URL": broker_url}
    # When the doctor runs
    result, _ = doctor(env, "--json", "--timeout", "0.5")
    # Then the database answers, its schema is missing, and no worker delivers anything
    checks = checks_of(result)
    assert result.exit_code == 1
    assert checks["database"]["status"] == "ok" and checks["broker"]["status"] == "ok"
    assert checks["schema"]["status"] == "problem" and "never migrated" in checks["schema"]["detail"]
    assert "certctl-notify migrate" in checks["schema"]["fix"]
    assert checks["workers"]["status"] == "problem"
    assert "nothing delivers alerts" in checks["workers"]["detail"]
    assert "certctl-notify worker" in checks["workers"]["fix"]
    # and no channel configured is a warning, not a problem
    assert checks["configuration"]["status"] == "warning"
    assert {checks[name]["status"] for name in CHANNELS} == {"skipped"}

    # Given the schema one revision behind
    upgrade(url, "0011_attempt_hourly")
    checks = checks_of(doctor(env, "--json", "--timeout", "0.5")[0])
    assert checks["schema"]["status"] == "problem"
    assert "at revision 0011_attempt_hourly, not the latest" in checks["schema"]["detail"]
    assert "certctl-notify migrate" in checks["schema"]["fix"]

    # Given a revision this code does not know (a newer version migrated the database)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    engine.dispose()
    checks = checks_of(doctor(env, "--json", "--timeout", "0.5")[0])
    assert checks["schema"]["status"] == "problem" and "does not know" in checks["schema"]["detail"]


def test_a_bad_configuration_value_is_a_problem_and_the_other_checks_are_skipped(tmp_path):
    env = {"CERTCTL_DATA_DIR": str(tmp_path), "CERTCTL_NOTIFICATION_RETRY_BASE": "abc",
           "CERTCTL_SLACK_WEBHOOK_URL": f"https://hooks.slack.example/services/T0/B0/{SLACK_TOKEN}"}
    result, elapsed = doctor(env, "--json")
    assert result.exit_code == 1 and elapsed < 2
    checks = checks_of(result)
    assert checks["configuration"]["status"] == "problem"
    assert "CERTCTL_NOTIFICATION_RETRY_BASE='abc' is not a duration" in checks["configuration"]["detail"]
    assert "docs/configuration.md" in checks["configuration"]["fix"]
    skipped = [name for name in checks if name != "configuration"]
    assert skipped == ["database", "schema", "broker", "workers", "channels"]
    assert all(checks[name]["status"] == "skipped" and "configuration" in checks[name]["detail"] for name in skipped)
    text, _ = doctor(env)
    lines = text.output.splitlines()
    assert lines[0].startswith("✗ configuration ") and lines[1].strip().startswith("fix: ")
    assert lines[-1] == "1 problem" and text.exit_code == 1
    assert SLACK_TOKEN not in text.output + result.output
    # and nothing was created on the way: the embedded files are made by migrate and dev, not the doctor
    assert list(tmp_path.iterdir()) == []

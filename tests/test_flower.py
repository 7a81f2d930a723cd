"""Flower beside the workers: `certctl-notify flower` starts it on our broker with basic auth from the
environment (not the command line), and compose's flower service does the same."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from click.testing import CliRunner

from cli import main

ROOT = Path(__file__).resolve().parents[1]
FLOWER = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["flower"]


def get(url: str, **kwargs) -> httpx.Response:
    """GET straight to 127.0.0.1, never through a proxy from the environment."""
    return httpx.get(url, trust_env=False, **{"timeout": 5, **kwargs})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def flower(make_env, tmp_path):
    """``flower(**env)`` runs ``certctl-notify flower`` until the test ends; returns (process, base URL)."""
    started: list[subprocess.Popen] = []

    def start(**overrides):
        port = free_port()
        env = {**os.environ, **make_env(CERTCTL_FLOWER_PORT=port, **overrides)}
        cli = Path(sys.executable).with_name("certctl-notify")
        log = open(tmp_path / f"flower{len(started)}.log", "wb")
        proc = subprocess.Popen([str(cli), "flower"], env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / log.name).read_text()
            try:
                if get(f"{base}/healthcheck", timeout=1).status_code == 200:
                    return proc, base
            except httpx.HTTPError:
                time.sleep(0.2)
        pytest.fail("Flower did not answer /healthcheck within 30 s")

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_flower_starts_on_our_broker_with_basic_auth_kept_out_of_the_command_line(flower):
    # Given a password in CERTCTL_FLOWER_BASIC_AUTH
    proc, base = flower(CERTCTL_FLOWER_BASIC_AUTH="ops:s3cret-flower")
    # Then Flower's pages need it
    assert get(f"{base}/workers").status_code == 401
    assert get(f"{base}/workers", auth=("ops", "wrong")).status_code == 401
    assert get(f"{base}/workers", auth=("ops", "s3cret-flower")).status_code == 200
    # And the health check and Prometheus metrics answer without it (probes and scrapes)
    assert get(f"{base}/metrics").status_code == 200
    # And the password is in no process's command line
    cmdline = " ".join(psutil.Process(proc.pid).cmdline())
    assert "workers.app" in cmdline and "flower" in cmdline and "s3cret" not in cmdline


def test_without_a_password_flower_listens_on_loopback_only(monkeypatch, make_env):
    for name, value in make_env().items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append((args, env)))
    result = CliRunner().invoke(main, ["flower", "--port", "5599"])
    assert result.exit_code == 0, result.output
    (args, env), = calls
    assert args[1:6] == ["-m", "celery", "-A", "workers.app", "flower"]
    assert "--port=5599" in args and "--address=127.0.0.1" in args and "FLOWER_BASIC_AUTH" not in env
    assert "127.0.0.1 only" in result.output


def test_compose_flower_service_names_the_app_and_takes_basic_auth_from_the_environment():
    command = FLOWER["command"]
    assert command[:4] == ["celery", "-A", "workers.app", "flower"]
    assert not any("basic" in part for part in command), "the password would show in the command line"
    assert FLOWER["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert FLOWER["environment"]["CERTCTL_BROKER_URL"]  # the same broker as the workers
    assert "/healthcheck" in " ".join(FLOWER["healthcheck"]["test"])


@pytest.mark.parametrize("env, message", [
    ({"CERTCTL_FLOWER_BASIC_AUTH": "ops"}, "CERTCTL_FLOWER_BASIC_AUTH"),
    ({"CERTCTL_FLOWER_BASIC_AUTH": "ops:pw,:pw"}, "CERTCTL_FLOWER_BASIC_AUTH"),
    ({"CERTCTL_FLOWER_PORT": "70000"}, "CERTCTL_FLOWER_PORT"),
    ({"CERTCTL_INSPECT_TIMEOUT": "0"}, "CERTCTL_INSPECT_TIMEOUT"),
])
def test_a_bad_monitor_setting_is_refused_by_name(env, message):
    from certctl_notify.environment import load_settings
    from certctl_notify.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_monitor_settings_are_read_once():
    from certctl_notify.environment import load_settings

    env = {"CERTCTL_FLOWER_BASIC_AUTH": "ops:a, viewer:b", "CERTCTL_INSPECT_TIMEOUT": "250ms"}
    monitor = load_settings(env).monitor
    assert monitor.flower_basic_auth == ("ops:a", "viewer:b") and monitor.inspect_timeout_seconds == 0.25
    assert monitor.flower_port == 5555 and "ops:a" not in repr(monitor)

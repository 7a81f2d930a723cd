"""compose.yaml is checked by validation (no Docker engine runs here): schema, start order, and that
every command names a module and entry point that exist."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from certctl_notify.environment import load_settings
from cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_file_is_valid_against_the_compose_specification():
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_is_present_and_starts_after_its_dependencies():
    assert {"postgres", "redis", "migrate", "api", "worker", "beat", "flower"} <= set(SERVICES)
    for name in ("api", "worker", "beat", "flower"):
        deps = SERVICES[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis", "api", "worker", "flower"):
        assert "healthcheck" in SERVICES[name], name


def _celery_app_target(command: list[str]) -> str:
    return command[command.index("-A") + 1]


@pytest.mark.parametrize("name", ["worker", "beat", "flower"])
def test_celery_services_name_an_app_that_exists(name):
    command = SERVICES[name]["command"]
    module_name = _celery_app_target(command)
    module = importlib.import_module(module_name)
    assert hasattr(module, "app"), f"{module_name} has no Celery app"
    assert command[command.index("-A") + 2] == name


def test_api_service_names_the_app_factory():
    target = SERVICES["api"]["command"][-1]
    module_name, call = target.split(":")
    assert call.endswith("()")
    assert callable(getattr(importlib.import_module(module_name), call[:-2]))


def test_migrate_service_runs_a_cli_command_that_exists():
    command = SERVICES["migrate"]["command"]
    assert command[0] == "certctl-notify"
    result = CliRunner().invoke(cli_main, [command[1], "--help"])
    assert result.exit_code == 0, result.output


def test_every_long_running_role_has_a_healthcheck_and_the_image_runs_as_a_user():
    for name in ("api", "worker", "beat", "flower"):
        assert SERVICES[name]["healthcheck"]["test"], name
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


RABBITMQ_OVERRIDE = ROOT / "compose.rabbitmq.yaml"


def test_the_rabbitmq_variant_is_valid_and_moves_every_role_to_rabbitmq():
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(RABBITMQ_OVERRIDE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    override = yaml.safe_load(RABBITMQ_OVERRIDE.read_text())["services"]
    assert override["rabbitmq"]["healthcheck"]["test"]
    for name in ("api", "worker", "beat", "flower"):
        # compose merges these mappings into compose.yaml's: the broker URL is replaced, the wait added
        assert override[name]["environment"]["CERTCTL_BROKER_URL"].startswith("amqp://"), name
        assert override[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
        merged = {**SERVICES[name]["environment"], **override[name]["environment"]}
        settings = load_settings({k: v.replace("${RABBITMQ_PASSWORD:-certctl}", "pw") for k, v in merged.items()
                                  if "${" not in v or "RABBITMQ_PASSWORD" in v})
        assert settings.retry.hold_max_seconds == 0

"""The shipped Prometheus alert rules: valid for promtool, firing on the scripted series of alerts_test.yml
and quiet on the healthy ones, each with a summary and a runbook section that exists, and built only on
metric names that the code exports.

promtool comes from Debian's ``prometheus`` package (scripts/install-test-tools installs it); without it
these tests fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
TESTS = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
#: What SPEC §7 and issue 5 ask the rules to watch for, by alert name.
REQUIRED = {"CertctlNotifyDeadLetters", "CertctlNotifyDeadLettersGrowing", "CertctlNotifyOldestPendingTooOld",
            "CertctlNotifyRetriesDuePilingUp", "CertctlNotifyNoWorkerOnline", "CertctlNotifyChannelFailing"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run scripts/install-test-tools")
    return subprocess.run([binary, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60)


def test_the_rules_file_is_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-per-host.yml"])
def test_the_example_prometheus_configurations_are_valid_and_load_the_rules(config):
    result = promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_fires_on_its_scripted_series_and_stays_quiet_on_a_healthy_one():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # And each alert has at least one case where it fires and one where it must not
    cases = [case for test in TESTS for case in test["alert_rule_test"]]
    for rule in RULES:
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown firing"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown quiet"


def test_every_alert_the_spec_asks_for_is_there_with_a_summary_and_a_runbook_section():
    assert REQUIRED <= {rule["alert"] for rule in RULES}
    headings = re.findall(r"^#{2,4} (.+)$", (ROOT / "docs" / "runbook.md").read_text(), flags=re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
    for rule in RULES:
        annotations = rule["annotations"]
        assert annotations.get("summary"), rule["alert"]
        target, _, anchor = annotations["runbook"].partition("#")
        assert target == "docs/runbook.md" and anchor in anchors, f"{rule['alert']}: no runbook section #{anchor}"


def test_the_rules_use_only_metrics_the_code_exports():
    exported = (ROOT / "certctl_notify" / "metrics.py").read_text()
    for rule in RULES:
        for name in set(re.findall(r"\bcertctl_[a-z_]+", rule["expr"])):
            assert f'"{name}"' in exported, f"{rule['alert']} uses {name}, which certctl_notify/metrics.py lacks"
        # The no-worker rule reads Flower's own gauge; make sure the installed Flower still exports it
        if "flower_" in rule["expr"]:
            import flower.events

            assert "flower_worker_online" in Path(flower.events.__file__).read_text()

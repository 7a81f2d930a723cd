"""The production set-up's first commands, as a new user runs them: a fresh virtualenv with only the
package installed (no test extras, no psycopg 3), a plain ``postgresql://`` URL, ``certctl-notify
migrate``, then the API under gunicorn taking and showing an alert."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from tests.support.api_server import GunicornProcess

ROOT = Path(__file__).resolve().parents[1]
#: What `pip install` of the package reads (pyproject.toml's packages and the README).
PACKAGE_FILES = ("pyproject.toml", "README.md", "certctl_notify", "workers", "api", "cli", "migrations")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A virtualenv with ``pip install <this checkout>`` and nothing else (~35 s with a warm pip cache)."""
    home = tmp_path_factory.mktemp("fresh")
    # from a copy of the package's files: setuptools builds in the source tree (build/, *.egg-info)
    source = home / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv / "bin"


def run(bin_dir: Path, cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    # cwd outside the checkout: the installed package is imported, not this tree
    return subprocess.run([str(bin_dir / "certctl-notify"), *args], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **env}, timeout=120)


@pytest.mark.timeout(900)
def test_a_plain_postgresql_url_migrates_and_serves_from_a_fresh_install(fresh_venv, new_database, tmp_path):
    # Given an empty database named the way a first set-up writes it: postgresql://user@host:port/db
    url = make_url(new_database("postgresql"))
    plain = f"postgresql://{url.username}@{url.host}:{url.port or 5432}/{url.database}"
    env = {"CERTCTL_DATABASE_URL": plain, "CERTCTL_DATA_DIR": str(tmp_path / "data"),
           "CERTCTL_API_KEYS": "ops:admin-key:admin"}
    # When it is migrated
    migrated = run(fresh_venv, tmp_path, env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    # Then the API serves on it: an alert is taken and can be read back
    api = GunicornProcess(env, tmp_path / "gunicorn.log", workers=1, python=str(fresh_venv / "python"),
                          cwd=tmp_path, base_env={"PATH": os.environ["PATH"]}).start()
    try:
        auth = {"Authorization": "Bearer admin-key"}
        taken = httpx.post(f"{api.url}/api/v1/notifications", headers=auth, timeout=10,
                           json={"type": "ExpirationWarning", "channel": "Webhook", "message": "cert expires"})
        assert taken.status_code == 202, taken.text
        shown = httpx.get(f"{api.url}/api/v1/notifications/{taken.json()['data'][0]['id']}", headers=auth, timeout=10)
        assert shown.status_code == 200 and shown.json()["message"] == "cert expires"
    finally:
        api.stop()


def test_a_driver_that_is_not_installed_stops_the_first_command_with_one_line(fresh_venv, tmp_path):
    result = run(fresh_venv, tmp_path, {"CERTCTL_DATABASE_URL": "postgresql+psycopg://certctl:s3cret@db/certctl"},
                 "migrate")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'psycopg[binary]'" in lines[0] and "s3cret" not in lines[0]

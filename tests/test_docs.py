"""The operator documentation in docs/ stands on its own and matches the code."""

from __future__ import annotations

import re
from pathlib import Path

from cli import reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_configuration_reference_is_what_the_code_reads():
    assert (DOCS / "configuration.md").read_text() == reference.render(), (
        "docs/configuration.md is stale: .venv/bin/python -m certctl_notify.reference > docs/configuration.md")


def test_every_variable_the_code_reads_has_a_meaning_and_every_documented_one_is_read():
    read = set(reference.read_defaults())
    documented = set(reference.variables())
    named_in_code = set(re.findall(r'"(CERTCTL_[A-Z0-9_]+)"', (ROOT / "certctl_notify" / "environment.py").read_text()))
    assert read == documented
    assert named_in_code <= read


def test_no_document_names_a_variable_that_does_not_exist():
    known = set(reference.variables()) | set(reference.client_variables())
    for path in [ROOT / "README.md", *DOCS.glob("*.md")]:
        named = set(re.findall(r"\b(CERTCTL_[A-Z0-9_]+[A-Z0-9])\b", path.read_text()))
        named = {name for name in named if not name.startswith("CERTCTL_TEST_")}
        assert named <= known, (path.name, named - known)


def test_the_documentation_never_points_outside_the_repository():
    # every relative path a document names, as a link or in its text, is a file of this repository
    for path in [ROOT / "README.md", *DOCS.glob("*.md")]:
        text = path.read_text()
        links = re.findall(r"\]\(([^)#]+)\)", text)
        parents = re.findall(r"(?<![\w.])(\.\./[\w./-]+)", text)
        for target in [*links, *parents]:
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            resolved = (path.parent / target).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), (path.name, target)

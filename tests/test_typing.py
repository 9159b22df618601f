"""New packages are typed strictly (shared/STYLE.md): mypy --strict on them, as part of the test
command, so CI and a developer's `pytest` check the same. Older modules they import are followed
silently (not yet strict themselves)."""
from __future__ import annotations

from pathlib import Path

import pytest

STRICT = ["gateway/mllp", "gateway/mllp_cli.py"]
REPO = Path(__file__).resolve().parent.parent


def test_new_packages_pass_mypy_strict():
    api = pytest.importorskip("mypy.api", reason="mypy is in the test extras: pip install -e '.[test]'")
    stdout, stderr, status = api.run(["--strict", "--follow-imports=silent", "--cache-dir",
                                      str(REPO / ".mypy_cache"), *(str(REPO / p) for p in STRICT)])
    assert status == 0, stdout + stderr

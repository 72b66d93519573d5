"""Under CI=true a skipped test fails the run unless it is listed with its reason."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _pytest(tmp_path, ci: str):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\ndef test_needs_something():\n    pytest.skip('tool missing')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)


def test_a_skip_fails_under_ci_and_says_why(tmp_path):
    r = _pytest(tmp_path, "true")
    assert r.returncode == 1 and "skipped under CI=true" in r.stdout and "tool missing" in r.stdout


def test_a_skip_is_a_skip_outside_ci(tmp_path):
    r = _pytest(tmp_path, "")
    assert r.returncode == 0 and "1 skipped" in r.stdout

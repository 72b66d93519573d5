"""A regular install (a wheel, not the editable checkout) carries every file the package reads."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_every_data_file_of_the_package(tmp_path):
    # built from a copy without build leftovers: an egg-info of an earlier build would list the
    # files its SOURCES.txt had, whatever the package data declares now
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "appliance", "tuning", "benches"):
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "*.egg-info"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                          str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel, = tmp_path.glob("appliance-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {p.relative_to(ROOT).as_posix()
            for top in ("appliance", "tuning", "benches") for p in (ROOT / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(want - names)
    assert not missing, f"not in the wheel: {missing}"

"""The numba cache directory keyed by the sources, and ``appliance compile``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import jit

ROOT = Path(__file__).resolve().parents[1]


def _tree(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("X = 1\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    return 2\n")
    return pkg


def test_source_key_changes_with_an_edit_to_any_module_and_with_a_new_module(tmp_path):
    pkg = _tree(tmp_path)
    k0 = jit.source_key([pkg])
    assert jit.source_key([pkg]) == k0                      # stable
    (pkg / "sub" / "b.py").write_text("def f():\n    return 3\n")   # a callee elsewhere
    k1 = jit.source_key([pkg])
    assert k1 != k0
    (pkg / "c.py").write_text("")
    assert jit.source_key([pkg]) not in (k0, k1)


def test_source_key_ignores_files_that_are_not_python_sources(tmp_path):
    pkg = _tree(tmp_path)
    k0 = jit.source_key([pkg])
    (pkg / "notes.txt").write_text("x")
    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "b.f-1.py311.nbi").write_bytes(b"x")
    assert jit.source_key([pkg]) == k0


def _env(**kv):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", jit.ENV_ROOT, jit.ENV_DIR)}
    env["PYTHONPATH"] = str(ROOT)
    env.update(kv)
    return env


def _cache_dir_of(env) -> str:
    out = subprocess.run([sys.executable, "-c", "import os, appliance; "
                          "print(os.environ['NUMBA_CACHE_DIR'])"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_user_numba_cache_dir_is_the_root_and_children_key_the_same_root(tmp_path):
    root = tmp_path / "nc"
    d = _cache_dir_of(_env(NUMBA_CACHE_DIR=str(root)))
    assert Path(d).parent == root and Path(d).name.startswith(jit.PREFIX)
    # a child process inherits the keyed directory: it keys the same root, no nesting
    child = _env(NUMBA_CACHE_DIR=d, **{jit.ENV_DIR: d, jit.ENV_ROOT: str(root)})
    assert _cache_dir_of(child) == d
    # a NUMBA_CACHE_DIR the user changed in between is a new root
    other = tmp_path / "other"
    changed = _env(NUMBA_CACHE_DIR=str(other), **{jit.ENV_DIR: d, jit.ENV_ROOT: str(root)})
    assert Path(_cache_dir_of(changed)).parent == other


def test_prune_keeps_the_newest_keyed_directories_and_nothing_else(tmp_path, monkeypatch):
    root = tmp_path / "nc"
    mine = root / f"{jit.PREFIX}mine"
    mine.mkdir(parents=True)
    old = []
    for k in range(6):
        p = root / f"{jit.PREFIX}{k:016x}"
        p.mkdir()
        os.utime(p, (1000 + k, 1000 + k))
        old.append(p)
    keep_me = root / "not-ours"
    keep_me.mkdir()
    monkeypatch.setenv(jit.ENV_ROOT, str(root))
    monkeypatch.setenv(jit.ENV_DIR, str(mine))
    gone = jit.prune(keep=3)
    assert sorted(gone) == sorted(old[:4])                  # the two newest + mine stay
    assert mine.exists() and keep_me.exists() and old[4].exists() and old[5].exists()


@pytest.mark.slow
def test_compile_fills_an_empty_cache_and_a_second_run_compiles_nothing(tmp_path):
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "nc"))
    cmd = [sys.executable, "-m", "appliance.cli", "compile", "--only",
           "appliance.transport.warm", "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    r1 = json.loads(first.stdout)
    assert r1["ok"] and r1["kernels_compiled"] >= 10 and r1["cache_index_files"] >= 10
    assert "1/1 modules" in first.stderr
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    r2 = json.loads(second.stdout)
    assert second.returncode == 0 and r2["ok"] and r2["kernels_compiled"] == 0
    assert r2["cache_dir"] == r1["cache_dir"]


def test_compile_of_an_unknown_module_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "compile", "--only", "nope"],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("compile: unknown module(s) nope")


def test_every_part_and_every_venue_is_warmed_by_compile():
    """A venue or part missing from WARMERS would compile in a live actor's first seconds."""
    from appliance import jit
    from appliance.venues import registry
    for v in registry.VENUES:
        assert f"appliance.venues.{v}" in jit.WARMERS
    for part in ("transport", "engine", "fix", "ops"):
        assert f"appliance.{part}.warm" in jit.WARMERS
    assert len(set(jit.WARMERS)) == len(jit.WARMERS)

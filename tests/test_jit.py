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
    assert r2["cache_dir"] == r1["cache_dir"] and r2.get("complete")    # the stamp: no work
    # --force runs the warm-up again: every kernel now loads from the cache
    third = subprocess.run(cmd + ["--force"], env=env, capture_output=True, text=True,
                           timeout=900)
    r3 = json.loads(third.stdout)
    assert third.returncode == 0 and r3["ok"] and r3["kernels_compiled"] == 0
    assert not r3.get("complete") and "1/1 modules" in third.stderr


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
    for part in ("transport", "engine", "fix", "ops", "sim"):
        assert f"appliance.{part}.warm" in jit.WARMERS
    assert len(set(jit.WARMERS)) == len(jit.WARMERS)
    # the one-process loops: appliance compile --all (appliance group warms its own venue's)
    assert jit.OPTIONAL_WARMERS == ("appliance.group.warm", "appliance.sim.backtest")
    assert not set(jit.OPTIONAL_WARMERS) & set(jit.WARMERS)
    import importlib
    for name in jit.WARMERS + jit.OPTIONAL_WARMERS:
        assert callable(importlib.import_module(name).warm), name


# -- the kernel policy (jit.install_kernel_policy) ---------------------------------------------

_POLICY_SRC = """
import numpy as np
from numba import njit
from appliance import jit

@njit(**dict(jit.HELPER, cache=False))   # cache=False: this source has no file
def helper(a, k):
    return a[0] * k

@njit(cache=False, nogil=True, _nrt=False)
def pick(t, i):
    return t[i]                       # a heterogeneous tuple: types only with a literal index

@njit(cache=False, nogil=True, _nrt=False)
def caller(a):
    return helper(a, 3) + helper(a, 5) + helper(a, 7) + pick((1, 2.5), 1)

@njit(cache=False, nogil=True, _nrt=False)
def plain(a):
    return a[0]

@njit(cache=False, nogil=True, _nrt=False)
def outer(a):
    return plain(a) + 1
"""


def _policy_module(name):
    """Kernels in a module named like the package's own (the policy applies to those only)."""
    import types as pytypes
    m = pytypes.ModuleType(name)
    m.__dict__["__name__"] = name
    exec(compile(_POLICY_SRC, name, "exec"), m.__dict__)
    return m


def test_kernel_calls_compile_once_per_type_not_once_per_constant():
    import numpy as np
    from numba.core import types
    m = _policy_module("appliance._policy_probe_a")
    a = np.array([2], np.int64)
    assert m.caller(a) == 2 * 3 + 2 * 5 + 2 * 7 + 2.5
    sigs = list(m.helper.overloads)
    assert len(sigs) == 1, sigs                               # numba alone: three (3, 5, 7)
    assert not any(isinstance(t, types.Literal) for t in sigs[0])
    # a callee that only types with the literal falls back to numba's rule
    # (``pick`` has a Python entry point: its compiled caller used its twin, jit.shadow)
    assert not m.pick.overloads
    assert any(isinstance(t, types.Literal) for sig in jit.shadow(m.pick).overloads for t in sig)


def test_a_kernel_without_a_python_entry_point_refuses_a_python_call_in_one_line():
    import numpy as np
    m = _policy_module("appliance._policy_probe_b")
    m.caller(np.array([1], np.int64))                         # compiled for compiled callers
    with pytest.raises(TypeError, match="compiled callers only"):
        m.helper(np.array([1], np.int64), 2)                  # not a crash
    assert m.plain(np.array([4], np.int64)) == 4


def test_a_kernel_python_also_calls_is_compiled_for_its_callers_without_its_entry_point():
    """Item 6: a compiled caller uses the kernel's twin (no CPython wrapper, IR only, never
    emitted); the kernel's own Python entry point is compiled only when Python calls it, and
    a caller compiled after that reuses it."""
    import numpy as np
    m = _policy_module("appliance._policy_probe_d")
    a = np.array([4], np.int64)
    assert m.outer(a) == 5
    assert not m.plain.overloads                      # nothing compiled for Python
    twin = jit.shadow(m.plain)
    assert twin is jit.shadow(m.plain) and twin.py_func.__qualname__ == "plain" + jit.SHADOW_SUFFIX
    (cres,) = twin.overloads.values()
    assert cres.library._appliance_ir_only            # not emitted as machine code
    assert m.plain(a) == 4                            # Python's call compiles the entry point
    assert len(m.plain.overloads) == 1 and len(twin.overloads) == 1
    assert m.outer(np.array([[7]], np.int64)[0]) == 8
    b = np.array([1.5])                               # a new type after the Python call: twin
    assert m.outer(b) == 2.5 and len(twin.overloads) == 2 and len(m.plain.overloads) == 1


def test_package_kernels_carry_no_cfunc_wrapper_and_others_are_untouched():
    from numba import njit
    m = _policy_module("appliance._policy_probe_c")
    assert m.plain.targetoptions.get("no_cfunc_wrapper") is True
    outside = njit(lambda x: x)
    assert "no_cfunc_wrapper" not in outside.targetoptions


def test_the_cli_sets_up_the_cache_and_policy_even_when_a_directory_shadows_the_package(tmp_path):
    """``python -m appliance.cli`` from a directory holding an ``appliance/`` folder (a clone, or
    a state directory) can load the package as a namespace package without its __init__: the
    CLI itself must still key the cache and install the kernel policy before any kernel exists."""
    (tmp_path / "appliance" / "state").mkdir(parents=True)
    code = ("import appliance, appliance.cli, os\n"
            "from numba.core.registry import CPUDispatcher\n"
            "print(getattr(appliance, '__file__', None) is None,"
            " getattr(CPUDispatcher, '_appliance_policy', False),"
            " os.path.basename(os.environ.get('NUMBA_CACHE_DIR', '')).startswith('appliance-'))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", jit.ENV_DIR, jit.ENV_ROOT, "PYTHONPATH")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shadowed, policy, keyed = out.stdout.split()
    assert (policy, keyed) == ("True", "True"), (shadowed, out.stdout)


_IR_PROBE = '''
from numba import njit
from appliance import jit


@njit(**jit.HELPER)
def helper(a, k):
    s = 0
    for x in a:
        s += x * k
    return s


@njit(**jit.INTERNAL)
def mid(a):
    return helper(a, 3) + 1


@njit(cache=True)
def entry_a(a):
    return mid(a)


@njit(cache=True)
def entry_b(a):
    return mid(a) * 2
'''

_IR_DRIVER = '''
import importlib.util, json, sys
import numpy as np
import appliance
spec = importlib.util.spec_from_file_location("appliance._ir_probe", sys.argv[1])
m = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = m
spec.loader.exec_module(m)
entry = getattr(m, sys.argv[2])
value = int(entry(np.arange(4)))
lib = lambda d: next((c.library for c in d.overloads.values()), None)
print(json.dumps({"value": value,
                  "mid_ir_only": bool(getattr(lib(m.mid), "_appliance_ir_only", False)),
                  "entry_ir_only": bool(getattr(lib(entry), "_appliance_ir_only", False)),
                  "mid_hits": sum(m.mid.stats.cache_hits.values()),
                  "mid_misses": sum(m.mid.stats.cache_misses.values())}))
'''


def test_a_kernel_without_a_python_entry_point_is_kept_as_ir_and_cached_as_ir(tmp_path):
    """Policy 5: a compiled-callers-only kernel is never emitted as machine code (its callers
    link its IR); it is cached as IR, and a later process compiling a new caller loads it from
    the cache and links it."""
    probe = tmp_path / "ir_probe.py"
    probe.write_text(_IR_PROBE)
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "nc"))

    def run(entry):
        r = subprocess.run([sys.executable, "-c", _IR_DRIVER, str(probe), entry], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)

    first = run("entry_a")
    assert first["value"] == (0 + 1 + 2 + 3) * 3 + 1
    assert first["mid_ir_only"] and not first["entry_ir_only"]
    assert first["mid_misses"] == 1 and first["mid_hits"] == 0
    second = run("entry_b")                    # a new caller: mid comes from the cache, as IR
    assert second["value"] == 2 * first["value"]
    assert second["mid_ir_only"] and second["mid_hits"] == 1 and second["mid_misses"] == 0
    third = run("entry_a")                     # the cached entry point needs nothing else
    assert third["value"] == first["value"] and third["mid_hits"] == third["mid_misses"] == 0

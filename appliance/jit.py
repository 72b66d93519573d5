"""Where compiled kernels are cached, and the one list of the parts' warm-up functions.

Cache directory. numba's ``cache=True`` checks only the timestamp of the file that holds a
function: an edit to a callee in another module (a record offset, a risk check) leaves a stale
caller in the cache. So every kernel of the package is cached in a directory keyed by a hash of
all the package's sources (``appliance/**.py`` and ``benches/**.py``, their paths and contents),
the package's location, the Python, numba and llvmlite versions and the host CPU::

    <root>/appliance-<key>/          key = sha256(...)[:16]
    root = $NUMBA_CACHE_DIR if the user set it, else $XDG_CACHE_HOME/appliance/numba
           (~/.cache/appliance/numba); a root that cannot be written falls back to the
           system temp directory

Any source edit gives a new key, hence a cold but correct cache. :func:`setup_cache` runs when
``appliance`` is imported, before any kernel is defined: it sets ``NUMBA_CACHE_DIR`` to the keyed
directory (numba reads it when a cached function is defined) and records the root in
``APPLIANCE_NUMBA_CACHE_ROOT``, so child processes, which inherit both, key the same root instead
of nesting a directory inside the parent's. ``appliance compile`` removes all but the newest
:data:`KEEP` keyed directories of a root.

Warm-up. Each part with compiled kernels has a module with a ``warm()`` function that calls every
kernel of the part once on small inputs of exactly the production types (numba compiles one
specialisation per argument-type signature: a warm-up with other types would compile code the
actors never run). :data:`WARMERS` lists those modules; ``appliance compile`` runs them in
parallel worker processes to fill the cache, and each actor runs its part's ``warm()`` before it
goes live, so no compile ever happens in a live loop (after ``appliance compile`` a warm-up only
loads machine code from the cache).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import platform
import sys
import tempfile
from pathlib import Path

# njit options of functions only compiled code calls (never Python): no CPython / C-callable
# wrappers, which would only cost compile time (about half of a small function's). HELPER is also
# force-inlined: typed and compiled once, inlined by LLVM into every caller (numba's own
# inline='always' would type the body again at every call site). Use ``@njit(**jit.HELPER)``.
INTERNAL = dict(cache=True, nogil=True, _nrt=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)
HELPER = dict(INTERNAL, forceinline=True)

ENV_ROOT = "APPLIANCE_NUMBA_CACHE_ROOT"
ENV_DIR = "APPLIANCE_NUMBA_CACHE_DIR"   # the keyed directory this process set (for children)
PREFIX = "appliance-"
KEEP = 4

# modules with a ``warm()`` function; appliance compile starts them in this order: the shared
# leaves, then the longest compiles first so the workers finish together. Each venue module is
# its own entry (appliance.venues.warm, which an md gateway does not use, warms all six in one
# process): six venues in one worker would be the whole compile's critical path.
WARMERS = (
    "appliance.transport.warm",
    "appliance.engine.warm",
    "appliance.venues.coinbase_advanced",
    "appliance.venues.kraken",
    "appliance.venues.bitfinex",
    "appliance.venues.binance",
    "appliance.venues.bitstamp",
    "appliance.venues.coinbase",
    "appliance.fix.warm",
    "appliance.ops.warm",
)

_PKG = Path(__file__).resolve().parent
_SOURCES = (_PKG, _PKG.parent / "benches")


def source_key(roots=_SOURCES) -> str:
    """Hash of everything the compiled code depends on (see the module docstring); ``roots``:
    the source trees (default: the package and benches/)."""
    h = hashlib.sha256()
    for top in roots:
        top = Path(top)
        if not top.is_dir():
            continue
        for p in sorted(top.rglob("*.py")):
            h.update(str(p.relative_to(top.parent)).encode())
            h.update(b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    h.update(f"{_PKG}|{sys.version}|{_version('numba')}|{_version('llvmlite')}|"
             f"{platform.machine()}|{_cpu_name()}".encode())
    return h.hexdigest()[:16]


def _version(dist: str) -> str:
    """A distribution's version without importing it (importing numba costs ~0.3 s)."""
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def _cpu_name() -> str:
    """The CPU model line of /proc/cpuinfo (numba also keys each cached entry by the LLVM CPU
    name and features; this keeps hosts apart when the cache directory is shared)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def default_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "appliance" / "numba"


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d):
            pass
        return True
    except OSError:
        return False


def cache_root() -> Path:
    """The root the keyed directories live in (see the module docstring)."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env and os.environ.get(ENV_DIR) == env and os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT])          # inherited from an appliance parent
    return Path(env) if env else default_root()


def setup_cache() -> Path:
    """Point numba's cache at this source tree's keyed directory (idempotent); returns it."""
    root = cache_root()
    if not _writable(root):
        root = Path(tempfile.gettempdir()) / f"appliance-numba-{os.getuid()}"
    d = root / f"{PREFIX}{source_key()}"
    d.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_ROOT] = str(root)
    os.environ[ENV_DIR] = str(d)
    os.environ["NUMBA_CACHE_DIR"] = str(d)
    if "numba" in sys.modules:     # numba already imported: make it re-read its environment
        from numba.core import config
        config.reload_config()
    return d


def cache_dir() -> Path:
    """The keyed cache directory of this process."""
    return Path(os.environ.get(ENV_DIR) or setup_cache())


def prune(keep: int = KEEP) -> list[Path]:
    """Remove all but the ``keep`` most recently used keyed directories of the root (never this
    process's own, never anything not named ``appliance-*``); returns what was removed."""
    import shutil

    root, mine = Path(os.environ.get(ENV_ROOT) or cache_root()), cache_dir()
    dirs = sorted((p for p in root.glob(f"{PREFIX}*") if p.is_dir() and p != mine),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    gone = dirs[max(0, keep - 1):]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def warm_module(name: str):
    """Import a WARMERS module and run its ``warm()``."""
    return importlib.import_module(name).warm()

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

from appliance.venues import registry as _venues

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

# modules with a ``warm()`` function, in the order appliance compile hands them to its workers:
# the longest first, so the workers finish together (CPU seconds of a cold compile on a 2-vCPU VM
# in parentheses), then every venue of the registry (8-18 s each, less when another venue already
# cached the shared helpers; each venue module is its own entry, its ``warm`` is ``Feed.warm``:
# six venues in one worker would be the critical path), then the small ones.
WARMERS = (
    "appliance.engine.warm",                 # 33
    "appliance.transport.warm",              # 2: the shared leaves, early
    "appliance.fix.warm",                    # 16
    "appliance.sim.warm",                    # 16
    *(f"appliance.venues.{name}" for name in _venues.VENUES),
    "appliance.ops.warm",                    # 1
)

# kernels the sim and the one-process-per-actor layout do not run, compiled only by
# ``appliance compile --all`` (or ``--only``): the one-process loop of every venue (its actor,
# ``appliance group``, warms its own venue's loop before it goes live) and the backtest loop
# (``appliance backtest`` compiles it before its clock starts).
OPTIONAL_WARMERS = (
    "appliance.group.warm",
    "appliance.sim.backtest",
)

_PKG = Path(__file__).resolve().parent.parent      # the appliance package
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


def install_kernel_policy() -> None:
    """How this package's kernels are compiled: three changes to numba's defaults, each one
    cutting compile time without changing the machine code the actors run, and one guard.
    Idempotent.

    1. Kernel-to-kernel calls are compiled for the argument types, never for literal values.
       numba types a call from one compiled function to another with the caller's argument
       types as they are: a constant argument is ``Literal[int](3)``, and the callee is compiled
       (typed, optimised, emitted as machine code, cached) once per distinct constant. The venue
       kernels pass record kinds, venue ids and flags as constants, so a Binance warm-up
       compiled 110 specialisations where 69 differ in type, and no two venues shared a helper.
       The policy compiles the callee for the non-literal types, also inside tuples of
       constants (a literal converts to its type, so numba's call template still matches); the
       callees are force-inlined where it matters (:data:`HELPER`), and LLVM folds the
       constants there as before. A callee that only types with literal arguments
       (``literally``, a tuple indexed by an argument) falls back to numba's own rule.
    2. No C-callable (cfunc) wrapper: it only serves a kernel used as a first-class function
       value, which this package never does (a kernel passed to a kernel, such as a venue's
       ``handle_frame`` to ``pump_frames``, is typed as a dispatcher and specialised).
    3. numba compares and hashes its compile flags (about 60 options) on every lookup of a typing
       template's cache, building a dict of every option each time: about 4 % of a compile. The
       dict is built from the options' defaults plus the values set, which is what it holds.
    4. A kernel without a Python entry point (:data:`HELPER`, :data:`INTERNAL`: compiled callers
       only, which saves compiling a CPython wrapper) stays out of numba's C dispatch table, so
       a call from Python raises a one-line TypeError instead of jumping to a wrapper that does
       not exist (a segfault).

    1, 2 and 4 apply to this package's kernels only (``appliance.*``, ``benches.*``)."""
    from numba.core import errors, targetconfig, types
    from numba.core.registry import CPUDispatcher

    if getattr(CPUDispatcher, "_appliance_policy", False):
        return
    own = ("appliance.", "benches.")

    def mine(dispatcher_or_func) -> bool:
        return (getattr(dispatcher_or_func, "__module__", "") or "").startswith(own)

    template = CPUDispatcher.get_call_template

    def plain(t):
        """``t`` without literal values, also inside a tuple of constants (``(1, 0, 2)``)."""
        if isinstance(t, types.Literal):
            return types.unliteral(t)
        if isinstance(t, (types.Tuple, types.UniTuple)):
            return types.Tuple([plain(x) for x in t.types])
        return t

    def get_call_template(self, args, kws):
        if mine(self.py_func):
            unlit = tuple(plain(a) for a in args)
            if unlit != tuple(args):
                try:
                    return template(self, unlit, kws)
                except errors.NumbaError:
                    pass                # needs the literal: numba's rule below
        return template(self, args, kws)

    init = CPUDispatcher.__init__

    def __init__(self, py_func, locals=None, targetoptions=None, **kw):
        if targetoptions is not None and mine(py_func):
            targetoptions.setdefault("no_cfunc_wrapper", True)
        init(self, py_func, locals=locals, targetoptions=targetoptions, **kw)

    def internal(d) -> bool:
        return bool(d.targetoptions.get("no_cpython_wrapper")) and mine(d.py_func)

    add_overload = CPUDispatcher.add_overload

    def add_overload_(self, cres):
        if internal(self):      # no Python entry point: never in the C dispatch table
            self.overloads[tuple(cres.signature.args)] = cres
            return
        add_overload(self, cres)

    compile_for_args = CPUDispatcher._compile_for_args

    def _compile_for_args(self, *args, **kws):
        if internal(self):
            raise TypeError(f"{self.py_func.__module__}.{self.py_func.__qualname__} is compiled "
                            "for compiled callers only (no Python entry point; a kernel Python "
                            "calls is declared without no_cpython_wrapper / jit.HELPER)")
        return compile_for_args(self, *args, **kws)

    def values(self):
        cls = type(self)
        defaults = cls.__dict__.get("_appliance_defaults")
        if defaults is None:
            defaults = {k: o.default for k, o in cls.options.items()}
            cls._appliance_defaults = defaults
        d = dict(defaults)
        d.update(self._values)
        return d

    CPUDispatcher.get_call_template = get_call_template
    CPUDispatcher.__init__ = __init__
    CPUDispatcher.add_overload = add_overload_
    CPUDispatcher._compile_for_args = _compile_for_args
    targetconfig.TargetConfig.values = values
    CPUDispatcher._appliance_policy = True


def warm_module(name: str):
    """Import a WARMERS module and run its ``warm()``."""
    return importlib.import_module(name).warm()

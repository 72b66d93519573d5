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

# modules with a ``warm()`` function, in the order appliance compile hands them to its two (or
# more) workers: the engine, the longest, first; Binance beside it, because the other venues reuse
# its JSON and book helpers from the cache once it is done (Coinbase cold beside Binance took
# 11.9 s, after it 4.9); then the FIX and exchange kernels, the other venues and the small ones.
# CPU seconds of a cold compile on a 2-vCPU VM in parentheses.
_FIRST_VENUE = "binance"
WARMERS = (
    "appliance.engine.warm",                 # 20-22
    f"appliance.venues.{_FIRST_VENUE}",      # 11-13
    "appliance.transport.warm",              # 1: the shared leaves
    "appliance.fix.warm",                    # 13-14
    "appliance.sim.warm",                    # 10-11
    *(f"appliance.venues.{name}" for name in _venues.VENUES if name != _FIRST_VENUE),  # 3-5
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
    """How this package's kernels are compiled: four changes to numba's defaults, each one
    cutting compile time (the fifth lets LLVM optimise a force-inlined helper once, inside its
    callers, instead of also alone), and one guard. Idempotent.

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

    5. A kernel without a Python entry point is never emitted as machine code (only the entry
       points that link it are), and a force-inlined one is optimised only where it is inlined
       (:func:`_install_ir_only`).
    6. A kernel with a Python entry point is compiled for its compiled callers without it, as
       in 5 (:func:`_install_callee_shadows`); its Python entry point only when Python calls it.

    1, 2, 4, 5 and 6 apply to this package's kernels only (``appliance.*``, ``benches.*``)."""
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
    _install_callee_shadows(mine, internal)
    CPUDispatcher.__init__ = __init__
    CPUDispatcher.add_overload = add_overload_
    CPUDispatcher._compile_for_args = _compile_for_args
    targetconfig.TargetConfig.values = values
    _install_ir_only(own)
    CPUDispatcher._appliance_policy = True


IR_KIND = "appliance-ir"     # how a kernel without a Python entry point is cached (its LLVM IR)
SHADOW_SUFFIX = "__callee"   # qualname suffix of a kernel's compiled-callers-only twin


def shadow(dispatcher):
    """The compiled-callers-only twin of a kernel with a Python entry point (item 6 of
    :func:`install_kernel_policy`): the same function, compiled with :data:`INTERNAL`'s
    wrapper options (its other options as the kernel's), cached under its own name
    (``<qualname>__callee``). Made once per kernel, on the first compiled call that needs it."""
    import types as pytypes

    from numba.core.registry import CPUDispatcher
    twin = dispatcher.__dict__.get("_appliance_shadow")
    if twin is None:
        f = dispatcher.py_func
        g = pytypes.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__,
                                 f.__closure__)
        g.__kwdefaults__ = f.__kwdefaults__
        g.__module__ = f.__module__
        g.__qualname__ = f.__qualname__ + SHADOW_SUFFIX
        g.__doc__ = f.__doc__
        opts = dict(dispatcher.targetoptions, no_cpython_wrapper=True, no_cfunc_wrapper=True)
        twin = CPUDispatcher(g, locals=dict(dispatcher.locals), targetoptions=opts,
                             pipeline_class=dispatcher._compiler.pipeline_class)
        if type(dispatcher._cache).__name__ != "NullCache":
            twin.enable_caching()
        dispatcher._appliance_shadow = twin
    return twin


def _install_callee_shadows(mine, internal) -> None:
    """Item 6 of :func:`install_kernel_policy`. A kernel with a Python entry point that another
    kernel calls is compiled for its compiled callers as its twin (:func:`shadow`): no CPython
    wrapper, and (item 5) never emitted as machine code nor optimised as a module of its own,
    unless the kernel itself was already compiled for those argument types (by a Python call),
    which its callers then reuse as before. numba compiles a called kernel with its own options:
    a kernel Python also calls (a venue's ``parse_frame`` for ``bench md``, the engine's
    ``handle_exec`` for tests, a strategy's ``on_book``) was emitted with its whole call tree
    for its Python entry point whenever a compiled caller used it, though only the outermost
    entry point (``pump``, ``step``) ever runs from Python in production. The kernel's own
    Python entry point is compiled when Python first calls it (tests, benches). Warm-ups call
    every entry point production calls from Python, and an actor counts any compile after its
    warm-up (``live_compiles``, :mod:`appliance.actor`)."""
    from numba.core.registry import CPUDispatcher

    template = CPUDispatcher.get_call_template

    def get_call_template(self, args, kws):
        if (not kws and not internal(self) and mine(self.py_func)
                and not self._appliance_compiled_for(args)):
            return shadow(self).get_call_template(args, kws)
        return template(self, args, kws)

    def compiled_for(self, args) -> bool:
        if tuple(args) in self.overloads:
            return True
        from numba.core import types
        plain = tuple(types.unliteral(a) for a in args)
        return plain in self.overloads

    get_overload = CPUDispatcher.get_overload

    def get_overload_(self, sig):
        try:
            return get_overload(self, sig)
        except KeyError:
            twin = self.__dict__.get("_appliance_shadow")
            if twin is None:
                raise
            return twin.get_overload(sig)

    CPUDispatcher._appliance_compiled_for = compiled_for
    CPUDispatcher.get_call_template = get_call_template
    CPUDispatcher.get_overload = get_overload_


def _install_ir_only(own: tuple) -> None:
    """Item 5 of :func:`install_kernel_policy`: a kernel without a Python entry point (compiled
    callers only: no CPython and no cfunc wrapper) is never turned into machine code. numba
    finalises every compiled function's library as if Python could call it: it links in the IR
    of all its callees, optimises the whole and emits machine code for all of it, which nothing
    runs (callers link the IR; the machine code the actors run is the entry points' own), and a
    helper deep in the call tree was optimised again at every level above it. Here such a
    library links its callees but is not added to the JIT engine, not emitted, and is cached as
    its IR (``IR_KIND``). A force-inlined helper (:data:`HELPER`: LLVM inlines it into every
    caller) is not optimised as a module either: its callers' optimisation sees its body in
    place; an :data:`INTERNAL` kernel (called, not inlined) still is, so the inliner's cost
    model sees it as before.

    Measured on a 2-vCPU VM from an empty cache (noisy: the VM's speed changed by a third during
    the day): the engine's and Binance's warm-ups in one process, alternating, 51.0 / 50.4 s
    with numba as is, 47.9 / 46.1 s with nothing emitted; later, 58.8 / 62.2 s emitting nothing
    vs 45.7 / 51.3 s also leaving helpers unoptimised. Whole cold ``appliance compile``: 67.0 s
    (CI) and 70-71 s emitting nothing, 56.8 s with this. ``bench engine`` and ``bench md``
    alternating both builds showed no difference beyond the VM's noise. (Leaving every
    INTERNAL kernel unoptimised too saved a little more but md frames looked 10-30 % slower.)
    Skipped (numba as is) when numba lacks what it relies on."""
    import llvmlite.binding as ll
    from numba.core import codegen as cg
    from numba.core import typed_passes as tp

    lib_cls = cg.JITCodeLibrary
    needed = [(tp.BaseNativeLowering, "run_pass"), (lib_cls, "finalize"),
              (lib_cls, "serialize_using_object_code"), (lib_cls, "_unserialize"),
              (lib_cls, "_finalize_dynamic_globals"), (lib_cls, "_verify_declare_only_symbols"),
              (lib_cls, "_get_module_for_linking"), (cg.JITCPUCodegen, "set_env")]
    if not all(hasattr(c, a) for c, a in needed):
        return
    run_pass = tp.BaseNativeLowering.run_pass

    def run_pass_(self, state):
        f = state.flags
        if (f.no_cpython_wrapper and f.no_cfunc_wrapper
                and (getattr(state.func_id.func, "__module__", "") or "").startswith(own)):
            if state.library is None:           # as numba's own pass would create it
                state.library = state.targetctx.codegen().create_library(
                    state.func_id.func_qualname)
                state.library.enable_object_caching()
            state.library._appliance_ir_only = True
            state.library._appliance_inlined = bool(f.forceinline)
        return run_pass(self, state)

    finalize = lib_cls.finalize

    def finalize_(self):
        if not getattr(self, "_appliance_ir_only", False):
            return finalize(self)
        cg.require_global_compiler_lock()
        self._raise_if_finalized()
        seen = set()
        for library in self._linking_libraries:
            if library not in seen:
                self._reload_init.update(library._reload_init)
                seen.add(library)
                self._final_module.link_in(library._get_module_for_linking(), preserve=True)
        if not self._appliance_inlined:
            self._optimize_final_module()
        self._final_module.verify()
        self._finalize_dynamic_globals()
        self._verify_declare_only_symbols()
        self._finalized = True

    serialize = lib_cls.serialize_using_object_code

    def serialize_(self):
        if not getattr(self, "_appliance_ir_only", False):
            return serialize(self)
        self._ensure_finalized()
        return (self.name, IR_KIND, self._get_module_for_linking().as_bitcode())

    unserialize = lib_cls._unserialize.__func__

    def unserialize_(cls, codegen, state):
        name, kind, data = state
        if kind != IR_KIND:
            return unserialize(cls, codegen, state)
        self = codegen.create_library(name)
        self._appliance_ir_only = True
        self._final_module = ll.parse_bitcode(data)
        self._shared_module = self._final_module
        self._finalize_dynamic_globals()
        self._finalized = True
        return self

    set_env = cg.JITCPUCodegen.set_env

    def set_env_(self, env_name, env):
        if self._engine.get_global_value_address(env_name) == 0:
            return              # an IR-only library: not in the engine (its callers hold it)
        return set_env(self, env_name, env)

    tp.BaseNativeLowering.run_pass = run_pass_
    lib_cls.finalize = finalize_
    lib_cls.serialize_using_object_code = serialize_
    lib_cls._unserialize = classmethod(unserialize_)
    cg.JITCPUCodegen.set_env = set_env_


def warm_module(name: str):
    """Import a WARMERS module and run its ``warm()``."""
    return importlib.import_module(name).warm()

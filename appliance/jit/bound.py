"""A compiled kernel called from Python without the dispatcher's type resolution.

Each call of a numba dispatcher from Python works out the numba type of every argument (walking
tuples, namedtuples and arrays) to find the machine code compiled for those types. For a kernel
that takes a few scalars and arrays that costs about a microsecond; for the one-process loop
(``appliance.group``), whose arguments are seven bundles holding a few hundred arrays, it was
11.5 us of every 14.7 us call (``appliance bench tick-to-trade``'s loop, measured on the
scratch arguments of ``group.run.scratch_args``), paid every time the loop came back to Python.

:class:`Bound` resolves the types once for a set of argument objects and then calls the compile
result's entry point (the machine code's CPython wrapper, which unboxes the arguments as the
compiled signature says) directly, as long as the same objects are passed: a call compares the
identity of each argument, and of each element of an argument that is a plain tuple built anew
for every call, with those it resolved (the bound objects are kept alive, so their ``id`` cannot
be reused); a Python int, float or bool compares by type and value (a file descriptor read
again is a new int object). Anything else, including the first call, goes through the dispatcher
as before, which also compiles what is missing; ``compiled`` then says the call needed machine
code that was not there when it was bound. Binding works out the argument types in Python
(``typeof``: 0.7 ms for the group loop's engine bundle), so a call site whose objects keep
changing would pay that every call: after :data:`MAX_RESOLVES` bindings it stays on the
dispatcher.

Measured (scratch arguments of the production types, p50 of 3,000 calls, dispatcher -> bound):
the group loop 14.8 -> 4.2 us, the engine's step 8.4 -> 2.1 us, the FIX gateway's gw_send
2.8 -> 2.0 us, Binance's md pump 1.7 -> 1.1 us (each call doing almost nothing: what is saved
is the dispatch).
"""
from __future__ import annotations

MAX_RESOLVES = 16
_BY_VALUE = (int, float, bool)


class Bound:
    """``Bound(dispatcher)(*args)``: ``dispatcher(*args)``, but straight to the machine code when
    ``args`` are the objects of the last resolved call (see the module docstring)."""

    __slots__ = ("dispatcher", "_keep", "_key", "_entry", "compiled", "resolved")

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._keep: tuple = ()       # the objects resolved (kept alive: their ids stay theirs)
        self._key: tuple = ()        # their identities
        self._entry = None
        self.compiled = 0            # calls that compiled a new specialisation
        self.resolved = 0            # calls that went through the dispatcher

    @staticmethod
    def _ids(args) -> tuple:
        # a plain tuple argument is usually built for the call: its elements are what persist
        return tuple(tuple(map(_key, a)) if type(a) is tuple else _key(a) for a in args)

    def __call__(self, *args):
        entry = self._entry
        if entry is not None and self._ids(args) == self._key:
            return entry(*args)
        return self._resolve(args)

    def _resolve(self, args):
        d = self.dispatcher
        if not hasattr(d, "overloads"):      # not a numba dispatcher (a Python stand-in)
            return d(*args)
        before = len(d.overloads)
        r = d(*args)
        self.resolved += 1
        if len(d.overloads) != before:
            self.compiled += 1
        if self.resolved > MAX_RESOLVES:     # the objects keep changing: dispatch from now on
            self._entry = None
            self._keep = ()
            return r
        cres = d.overloads.get(tuple(d.typeof_pyval(a) for a in args))
        if cres is None or cres.entry_point is None:    # nothing Python can call directly
            self._entry = None
            return r
        self._keep = tuple(tuple(a) if type(a) is tuple else a for a in args)
        self._key = self._ids(args)
        self._entry = cres.entry_point
        return r


def _key(a):
    t = type(a)
    return (t, a) if t in _BY_VALUE else id(a)

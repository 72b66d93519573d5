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
be reused). Anything else, including the first call, goes through the dispatcher as before, which
also compiles what is missing; ``compiled`` then says the call needed machine code that was not
there when it was bound.
"""
from __future__ import annotations


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
        return tuple(tuple(map(id, a)) if type(a) is tuple else id(a) for a in args)

    def __call__(self, *args):
        entry = self._entry
        if entry is not None and self._ids(args) == self._key:
            return entry(*args)
        return self._resolve(args)

    def _resolve(self, args):
        d = self.dispatcher
        before = len(d.overloads)
        r = d(*args)
        self.resolved += 1
        if len(d.overloads) != before:
            self.compiled += 1
        cres = d.overloads.get(tuple(d.typeof_pyval(a) for a in args))
        if cres is None:             # object mode or another dispatcher kind: always dispatch
            self._entry = None
            return r
        self._keep = tuple(tuple(a) if type(a) is tuple else a for a in args)
        self._key = self._ids(args)
        self._entry = cres.entry_point
        return r

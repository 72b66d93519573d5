"""appliance.jit.bound: a kernel called with the same objects goes straight to its machine code,
and anything else goes through numba's dispatcher (which also compiles what is missing)."""
from collections import namedtuple

import numpy as np
from numba import njit

from appliance.jit.bound import Bound

Pair = namedtuple("Pair", "a b")


@njit(cache=False)
def _total(md, p, k):
    """md: (fd, array), p: Pair of arrays, k: a scalar; writes p.b[0] and returns a sum."""
    fd, x = md
    p.b[0] = fd + k
    return x.sum() + p.a.sum() + p.b[0]


def test_the_same_objects_are_resolved_once_and_give_the_dispatchers_results():
    x = np.arange(4, dtype=np.int64)
    p = Pair(np.ones(3, np.int64), np.zeros(1, np.int64))
    call = Bound(_total)
    want = _total((7, x), p, 2)
    for _ in range(5):
        # the first tuple is built anew each call, as the group loop builds its md tuple
        assert call((7, x), p, 2) == want
    assert call.resolved == 1
    x[0] = 100                         # the same objects, new contents: read at each call
    p.a[1] = 10
    assert call((7, x), p, 2) == _total((7, x), p, 2)
    assert call.resolved == 1
    assert p.b[0] == 9                 # the compiled code wrote through the bound array


def test_another_object_goes_through_the_dispatcher_and_is_bound_in_turn():
    x = np.arange(4, dtype=np.int64)
    p = Pair(np.ones(3, np.int64), np.zeros(1, np.int64))
    call = Bound(_total)
    call((1, x), p, 0)
    y = np.arange(4, dtype=np.float64) / 2          # another type: a new specialisation
    assert call((1, y), p, 0) == _total((1, y), p, 0)
    assert call.resolved == 2 and call.compiled >= 1
    assert call((1, y), p, 0) == 3.0 + 3 + 1         # bound to y now
    assert call.resolved == 2
    assert call((2, y), p, 0) == 3.0 + 3 + 2         # an element of the tuple changed
    assert call.resolved == 3
    q = Pair(np.ones(3, np.int64), np.zeros(1, np.int64))
    assert call((2, y), q, 0) == _total((2, y), q, 0)
    assert call.resolved == 4
    assert call((2, y), q, 5) == 3.0 + 3 + 7
    assert call.resolved == 5


def test_a_bound_object_stays_alive_so_its_identity_cannot_be_taken_by_another():
    call = Bound(_total)
    p = Pair(np.ones(3, np.int64), np.zeros(1, np.int64))
    x = np.arange(4, dtype=np.int64)
    call((0, x), p, 0)
    held = call._keep
    del x
    assert any(isinstance(e, tuple) and isinstance(e[1], np.ndarray) for e in held)
    # a new array cannot reuse the bound one's address while the Bound holds it
    z = np.arange(4, dtype=np.float64)
    assert call((0, z), p, 0) == _total((0, z), p, 0)
    assert call.resolved == 2


def test_python_numbers_compare_by_value_and_changing_objects_end_on_the_dispatcher():
    from appliance.jit import bound
    x = np.arange(4, dtype=np.int64)
    p = Pair(np.ones(3, np.int64), np.zeros(1, np.int64))
    call = Bound(_total)
    for _ in range(3):
        fd = int("1000")                 # a new int object of the same value each time
        assert call((fd, x), p, 0) == 6 + 3 + 1000
    assert call.resolved == 1
    for i in range(bound.MAX_RESOLVES + 5):
        fresh = np.full(4, i, np.int64)  # a new array every call: bound once per call, then never
        assert call((1, fresh), p, 0) == 4 * i + 3 + 1
    assert call.resolved == bound.MAX_RESOLVES + 6 and call._entry is None
    assert call((1, x), p, 0) == 6 + 3 + 1
    assert call.resolved == bound.MAX_RESOLVES + 7

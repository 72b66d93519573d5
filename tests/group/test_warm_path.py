"""The one-process loop's prefetch hints (fixgw.warm_path when a frame arrives, the group's
_warm_after_python at each kernel call) read nothing into the state and write nothing: every
array of the engine, the FIX gateway and the md feed is bit for bit what it was, also for
ClOrdIDs and counts far beyond the tables."""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance.fix import gateway as fixgw
from appliance.group import run as group


@njit(cache=False, _nrt=False)
def _warm_fix(fx, next_clord, n):
    fixgw.warm_path(fx, next_clord, n)


@njit(cache=False, _nrt=False)
def _warm_all(md, en, fx):
    loop = en.loop
    group._warm_after_python(loop.md_hdrs[0], loop.md_datas[0], en.books, en.strats, en.gate,
                             en.io, fx)


def _arrays(obj, out):
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, tuple):
        for o in obj:
            _arrays(o, out)
    return out


def test_warm_paths_change_no_state():
    md, cal, en, fx, _frx, g, wait_ = group.scratch_args("binance")
    # state that is not all zeros: an open order, a sent-message row, the next sender number
    fx.ot[3, fixgw.OT_KEY] = 77
    fx.ot[3, fixgw.OT_QTY] = 5
    fx.sent[1, fixgw.SM_CLORD] = 77
    fx.gst[fixgw.G_NEXT_SEQ] = 41
    fx.sbuf[:10] = 65
    arrays = _arrays((md, en, fx), [])
    before = [a.copy() for a in arrays]
    for next_clord, n in ((1, 2), (2 ** 62, 2), (12345, 64)):
        _warm_fix(fx, next_clord, n)
    _warm_all(md, en, fx)
    changed = [i for i, (a, b) in enumerate(zip(arrays, before)) if not np.array_equal(a, b)]
    assert changed == []

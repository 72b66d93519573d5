"""The one-process loop's dry runs of the FIX gateway's order path (fixgw.dry_bundle): the dry
bundle shares only what gw_step reads, a dry run encodes its order on the bundle's own arrays,
nothing reaches the socket, and the live gateway's state is bit for bit what it was."""
from __future__ import annotations

import time

import numba
import numpy as np
import pytest

from appliance.fix import gateway as fixgw
from appliance.group import run as group
from appliance.transport import clock, netwarm, records

SHARED = {"consts", "instr", "syms", "cal", "cwords", "hidx"}     # read by gw_step, never written


def _live():
    md, cal, en, fx, frx, g, _w = group.scratch_args("binance")
    fx.gst[fixgw.G_READY] = 1
    fx.gst[fixgw.G_NEXT_SEQ] = 41
    fx.ot[3, fixgw.OT_KEY] = 77                 # state that is not all zeros
    fx.sent[1, fixgw.SM_CLORD] = 77
    fx.sbuf[:10] = 65
    return md, cal, en, fx, frx, g


def test_the_dry_bundle_has_the_live_types_and_shares_only_what_gw_step_reads():
    *_, fx, _frx, _g = _live()
    dry, rec = fixgw.dry_bundle(fx)
    assert numba.typeof(dry) == numba.typeof(fx)
    for name in fx._fields:
        a, b = getattr(fx, name), getattr(dry, name)
        if name in SHARED:
            assert a is b, name
        else:
            assert not np.shares_memory(a, b), name
    o = rec.view(records.NEW_ORDER)[0]
    assert o["rtype"] == records.RT_NEW_ORDER and o["clord_id"] == fixgw.DRY_CLORD


def _run(md, cal, en, fx, frx, g, warm, dry, dry_rec, until=None):
    """2 ms of an idle loop; with ``until``, again until until() holds (at most 5 s: a loaded CI
    host may deschedule this process for most of a 2 ms window)."""
    g[group.G_BUDGET] = int(2e-3 * float(cal[clock.C_HZ]))
    deadline = time.monotonic() + 5.0
    while True:
        group.STEPS["binance"](md, cal, en, fx, frx, g, (group.wait.make("spin"),
                                                         group.wait.new_state(), warm.words,
                                                         warm.buf, dry, dry_rec))
        if until is None or until() or time.monotonic() > deadline:
            return


def test_the_idle_loop_runs_the_order_path_dry_and_sends_nothing():
    md, cal, en, fx, frx, g = _live()
    dry, dry_rec = fixgw.dry_bundle(fx)
    live = [(n, getattr(fx, n).copy()) for n in fx._fields if n != "cwords"]
    a, b = netwarm.loopback_pair()
    warm = netwarm.NetWarm(5.0, cal)
    try:
        g[group.G_FIX_FD] = a.fileno()
        _run(md, cal, en, fx, frx, g, warm, dry, dry_rec, until=lambda: g[group.G_PATH_WARMS] > 5)
        runs = int(g[group.G_PATH_WARMS])
        assert runs > 5
        assert runs <= warm.counts()["net_warms"]             # one per net warm-up at most
        assert dry.gst[fixgw.G_SENT] == runs                   # each run encoded its order ...
        assert dry.gst[fixgw.G_OPEN] == 0                      # ... and left no open order
        msg = bytes(dry.sbuf[:dry.gst[fixgw.G_SEND_LEN]])
        assert msg.startswith(b"8=FIX.4.4\x01") and b"\x0135=D\x01" in msg and b"\x0111=1\x01" in msg
        assert [n for n, before in live if not np.array_equal(getattr(fx, n), before)] == []
        assert g[group.G_BATCHES] == 0 and g[group.G_ORDERS] == 0
        with pytest.raises(BlockingIOError):
            b.recv(4096)                                       # not a byte on the wire

        g[group.G_PATH_WARMS] = 0                              # a dry record of rtype 0: off
        _run(md, cal, en, fx, frx, g, warm, dry, np.zeros_like(dry_rec))
        assert g[group.G_PATH_WARMS] == 0
        g[group.G_FIX_FD] = -1                                 # no FIX socket: no dry runs
        _run(md, cal, en, fx, frx, g, warm, dry, dry_rec)
        assert g[group.G_PATH_WARMS] == 0
        assert warm.counts()["net_warm_errors"] == 0
    finally:
        warm.close()
        a.close()
        b.close()


def _bit_now_one(cal):
    """A TSC bit that is 1 now and stays 1 for at least 2 s."""
    t = int(clock.now_tsc(cal))
    need = int(2.0 * float(cal[clock.C_HZ]))
    for b in range(28, 48):
        if (t >> b) & 1 and (1 << b) - (t & ((1 << b) - 1)) > need:
            return b
    pytest.skip("no TSC bit between 28 and 47 is 1 for the next 2 s")


def test_warm_ab_limits_the_warm_ups_to_the_periods_its_tsc_bit_is_zero():
    md, cal, en, fx, frx, g = _live()
    dry, dry_rec = fixgw.dry_bundle(fx)
    a, b = netwarm.loopback_pair()
    warm = netwarm.NetWarm(5.0, cal)
    try:
        g[group.G_FIX_FD] = a.fileno()
        g[group.G_WARM_AB] = 62                                # bit 62 is 0 for centuries
        _run(md, cal, en, fx, frx, g, warm, dry, dry_rec,
             until=lambda: warm.counts()["net_warms"] > 10 and g[group.G_PATH_WARMS] > 5)
        assert warm.counts()["net_warms"] > 10 and g[group.G_PATH_WARMS] > 5
        before = (warm.counts()["net_warms"], int(g[group.G_PATH_WARMS]))
        g[group.G_WARM_AB] = _bit_now_one(cal)                 # a cold period: no warm-up
        _run(md, cal, en, fx, frx, g, warm, dry, dry_rec)
        assert (warm.counts()["net_warms"], int(g[group.G_PATH_WARMS])) == before
    finally:
        warm.close()
        a.close()
        b.close()


def test_a_bad_warm_ab_bit_is_one_line_and_exit_2():
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "appliance.cli", "group", "--venue", "binance",
                        "--session", "x", "--warm-ab", "70"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2
    assert p.stdout.strip() == "appliance group: --warm-ab 70: a TSC bit, 1 to 62 (0: off)"
    assert "Traceback" not in p.stderr

"""OMS: order state machine under out-of-order, duplicate and unknown execution reports; replace
pairs; row recycling; exec-id dedup set; quote reconciliation; order records."""
from __future__ import annotations

import random

import numpy as np
import pytest

from appliance.engine import oms as O
from appliance.engine import positions as P
from appliance.transport import records as R

BUY, SELL = R.SIDE_BUY, R.SIDE_SELL
V = R.VENUE_BINANCE
T0 = 1_700_000_000 * 10**9
FIRST = 5000


@pytest.fixture
def env():
    spec = dict(venue="binance", instrument=3, base_asset=0, quote_asset=1, tick_e8=10**6, lot_e8=10**3)
    led = P.make_ledger([spec], 2, {("binance", 0): 10**12, ("binance", 1): 10**14})
    oms = O.make_oms(64, 1, max_live=8, n_quotes=4, exec_id_capacity=64, first_clord_id=FIRST)
    return oms, led


def ack(clord, exec_type, orig=0, price=0, qty=0, leaves=0, cum=0, ord_status=0, venue=V, instrument=3):
    a = np.zeros(1, R.ACK)
    a["rtype"], a["venue"], a["instrument"] = R.RT_ACK, venue, instrument
    a["clord_id"], a["orig_clord_id"], a["exec_type"] = clord, orig, exec_type
    a["price"], a["qty"], a["leaves_qty"], a["cum_qty"], a["ord_status"] = price, qty, leaves, cum, ord_status
    return a.view(np.uint8)


def fill(clord, exec_id, price, qty, cum, leaves, fee=0, orig=0, venue=V):
    f = np.zeros(1, R.FILL)
    f["rtype"], f["venue"], f["instrument"] = R.RT_FILL, venue, 3
    f["clord_id"], f["orig_clord_id"], f["exec_id"] = clord, orig, exec_id
    f["last_price"], f["last_qty"], f["cum_qty"], f["leaves_qty"], f["fee"] = price, qty, cum, leaves, fee
    return f.view(np.uint8)


def reject(clord, orig=0, cancel=0, ord_status=0, instrument=3, reason=0):
    j = np.zeros(1, R.REJECT)
    j["rtype"], j["venue"], j["instrument"], j["reason"] = R.RT_REJECT, V, instrument, reason
    j["clord_id"], j["orig_clord_id"], j["is_cancel_reject"], j["ord_status"] = clord, orig, cancel, ord_status
    return j.view(np.uint8)


def apply(env, rec, now=T0):
    oms, led = env
    return O.apply_exec(oms, led, rec, now)


def new(env, side=BUY, price=100, qty=10, quote=-1):
    oms, led = env
    return O.check(O.new_order(oms, led, 0, side, price, qty, R.TIF_GTC, 7, quote, T0))


def state(env, row):
    return int(env[0].orders[row]["state"])


def test_new_order_is_pending_with_exposure_reserve_and_sequential_ids(env):
    oms, led = env
    r = new(env, BUY, 100, 10)
    r2 = new(env, SELL, 105, 4)
    o = oms.orders[r]
    assert (o["clord_id"], oms.orders[r2]["clord_id"]) == (FIRST, FIRST + 1)
    assert state(env, r) == O.OS_PENDING_NEW
    assert oms.agg[0, O.G_OPEN_BUY] == 10 and oms.agg[0, O.G_OPEN_SELL] == 4
    assert oms.agg[0, O.G_N_OPEN] == 2
    assert led.reserved[V, 1] == 100 * 10 * 10          # quote e8 for the buy
    assert led.reserved[V, 0] == 4 * 10**3              # base e8 for the sell
    assert O.find_order(oms, FIRST + 1) == r2


def test_ack_then_partial_then_full_fill_reaches_filled_and_releases_everything(env):
    oms, led = env
    r = new(env)
    assert apply(env, ack(FIRST, R.EXEC_NEW)) == O.EX_ACK
    assert state(env, r) == O.OS_NEW
    assert apply(env, fill(FIRST, 1, 100, 4, 4, 6, fee=3)) == O.EX_FILL
    assert state(env, r) == O.OS_PARTIAL
    assert oms.agg[0, O.G_OPEN_BUY] == 6 and led.reserved[V, 1] == 6000
    assert apply(env, fill(FIRST, 2, 99, 6, 10, 0)) == O.EX_FILL
    assert state(env, r) == O.OS_FILLED
    assert oms.agg[0].tolist() == [0, 0, 0, 0]
    assert led.reserved[V, 1] == 0
    assert (led.pos[0]["qty"], led.pos[0]["cost"], led.pos[0]["fees_e8"]) == (10, 400 + 594, 3)


def test_duplicate_fill_by_exec_id_is_counted_and_not_booked(env):
    oms, led = env
    new(env)
    apply(env, fill(FIRST, 77, 100, 4, 4, 6))
    assert apply(env, fill(FIRST, 77, 100, 4, 4, 6)) == O.EX_DUPLICATE
    assert led.pos[0]["qty"] == 4
    assert O.counters(oms)["exec_duplicate"] == 1


def test_fill_without_exec_id_is_deduplicated_by_cum_qty(env):
    oms, led = env
    new(env)
    assert apply(env, fill(FIRST, 0, 100, 4, 4, 6)) == O.EX_FILL
    assert apply(env, fill(FIRST, 0, 100, 4, 4, 6)) == O.EX_DUPLICATE
    assert apply(env, fill(FIRST, 0, 100, 2, 6, 4)) == O.EX_FILL
    assert led.pos[0]["qty"] == 6


def test_out_of_order_fills_are_both_booked_but_cum_and_leaves_never_go_back(env):
    oms, led = env
    r = new(env, qty=20)
    assert apply(env, fill(FIRST, 2, 101, 10, 15, 5)) == O.EX_FILL    # the later fill first
    assert apply(env, fill(FIRST, 1, 100, 5, 5, 15)) == O.EX_FILL     # stale cum, distinct fill
    o = oms.orders[r]
    assert (o["cum_qty"], o["leaves"], o["applied"]) == (15, 5, 15)
    assert state(env, r) == O.OS_PARTIAL
    assert (led.pos[0]["qty"], led.pos[0]["cost"]) == (15, 1010 + 500)
    assert oms.agg[0, O.G_OPEN_BUY] == 5


def test_fill_before_new_ack_then_late_ack_is_stale(env):
    oms, _ = env
    r = new(env)
    apply(env, fill(FIRST, 1, 100, 3, 3, 7))
    assert state(env, r) == O.OS_PARTIAL
    assert apply(env, ack(FIRST, R.EXEC_NEW)) == O.EX_STALE
    assert state(env, r) == O.OS_PARTIAL
    assert O.counters(oms)["exec_stale"] == 1


def test_unknown_clord_id_is_counted_and_changes_nothing(env):
    oms, led = env
    new(env)
    before = oms.orders.copy()
    assert apply(env, fill(999_999, 5, 100, 1, 1, 0)) == O.EX_UNKNOWN
    assert apply(env, ack(999_998, R.EXEC_NEW)) == O.EX_UNKNOWN
    assert apply(env, reject(999_997)) == O.EX_UNKNOWN
    assert (oms.orders == before).all()
    assert led.pos[0]["n_fills"] == 0
    assert O.counters(oms)["exec_unknown"] == 3


def test_report_for_another_venue_or_garbage_quantities_is_invalid(env):
    oms, led = env
    new(env)
    assert apply(env, fill(FIRST, 1, 100, 1, 1, 9, venue=R.VENUE_KRAKEN)) == O.EX_INVALID
    assert apply(env, fill(FIRST, 2, 100, 0, 1, 9)) == O.EX_INVALID
    assert apply(env, fill(FIRST, 3, -1, 1, 1, 9)) == O.EX_INVALID
    assert led.pos[0]["n_fills"] == 0


def test_non_exec_record_is_ignored(env):
    rec = np.zeros(1, R.NEW_ORDER)
    rec["rtype"] = R.RT_NEW_ORDER
    assert apply(env, rec.view(np.uint8)) == O.EX_IGNORED


def test_cancel_ack_by_cancel_id_cancels_and_duplicate_ack_is_counted(env):
    oms, led = env
    r = new(env)
    apply(env, ack(FIRST, R.EXEC_NEW))
    cid = O.check(O.cancel_order(oms, r, T0))
    assert state(env, r) == O.OS_PENDING_CANCEL
    assert O.cancel_order(oms, r, T0) == O.OM_BUSY
    assert apply(env, ack(cid, R.EXEC_CANCELED, orig=FIRST)) == O.EX_ACK
    assert state(env, r) == O.OS_CANCELLED
    assert oms.agg[0].tolist() == [0, 0, 0, 0] and led.reserved[V, 1] == 0
    assert apply(env, ack(cid, R.EXEC_CANCELED, orig=FIRST)) == O.EX_DUPLICATE
    assert O.cancel_order(oms, r, T0) == O.OM_NOT_WORKING


def test_fill_racing_the_cancel_is_still_booked_after_the_cancel_ack(env):
    oms, led = env
    r = new(env)
    cid = O.cancel_order(oms, r, T0)
    apply(env, ack(cid, R.EXEC_CANCELED, orig=FIRST, cum=2))
    assert apply(env, fill(FIRST, 9, 100, 2, 2, 0)) == O.EX_FILL
    assert state(env, r) == O.OS_CANCELLED
    assert led.pos[0]["qty"] == 2
    assert oms.agg[0].tolist() == [0, 0, 0, 0]


def test_cancel_reject_restores_the_working_state(env):
    oms, _ = env
    r = new(env)
    apply(env, ack(FIRST, R.EXEC_NEW))
    apply(env, fill(FIRST, 1, 100, 3, 3, 7))
    cid = O.cancel_order(oms, r, T0)
    assert apply(env, reject(cid, orig=FIRST, cancel=1)) == O.EX_CANCEL_REJECT
    assert state(env, r) == O.OS_PARTIAL
    assert oms.orders[r]["cancel_id"] == 0


def test_cancel_reject_without_symbol_or_refused_by_gateway_keeps_the_order_working(env):
    oms, _ = env
    r = new(env)
    apply(env, ack(FIRST, R.EXEC_NEW))
    cid = O.cancel_order(oms, r, T0)
    # OrderCancelReject carries no Symbol: the codec writes instrument 0xFFFFFFFF
    assert apply(env, reject(cid, orig=FIRST, cancel=1, instrument=0xFFFFFFFF)) == O.EX_CANCEL_REJECT
    assert state(env, r) == O.OS_NEW
    cid = O.cancel_order(oms, r, T0)
    # the FIX gateway refuses a cancel while the session is down: ord_status '8' on a cancel reject
    assert apply(env, reject(cid, orig=FIRST, cancel=1, ord_status=R.EXEC_REJECTED)) == O.EX_CANCEL_REJECT
    assert state(env, r) == O.OS_NEW and oms.agg[0, O.G_N_OPEN] == 1


def test_status_reply_applies_venue_verdict_and_counts_fills_we_never_saw(env):
    oms, _ = env
    r = new(env)
    assert apply(env, ack(FIRST, R.EXEC_ORDER_STATUS, ord_status=ord("0"))) == O.EX_ACK
    assert state(env, r) == O.OS_NEW
    assert apply(env, ack(FIRST, R.EXEC_ORDER_STATUS, ord_status=ord("1"), cum=4, leaves=6)) == O.EX_ACK
    assert O.counters(oms)["cum_ahead"] == 1
    assert apply(env, ack(FIRST, R.EXEC_ORDER_STATUS, ord_status=ord("4"), cum=4)) == O.EX_ACK
    assert state(env, r) == O.OS_CANCELLED


def test_report_for_another_instrument_is_invalid(env):
    new(env)
    assert apply(env, ack(FIRST, R.EXEC_NEW, instrument=4)) == O.EX_INVALID


def test_cancel_reject_saying_order_is_gone_cancels_it(env):
    oms, _ = env
    r = new(env)
    apply(env, ack(FIRST, R.EXEC_NEW))
    cid = O.cancel_order(oms, r, T0)
    apply(env, reject(cid, orig=FIRST, cancel=1, ord_status=ord("4")))
    assert state(env, r) == O.OS_CANCELLED


def test_cancel_reject_unknown_order_ends_the_order_and_a_late_fill_is_still_booked(env):
    oms, led = env
    r = new(env)
    apply(env, ack(FIRST, R.EXEC_NEW))
    cid = O.cancel_order(oms, r, T0)
    # "too late to cancel" (reason 0): the order is still ours, its fills will tell
    assert apply(env, reject(cid, orig=FIRST, cancel=1, ord_status=R.EXEC_REJECTED)) == O.EX_CANCEL_REJECT
    assert state(env, r) == O.OS_NEW
    cid = O.cancel_order(oms, r, T0)
    assert apply(env, reject(cid, orig=FIRST, cancel=1, ord_status=R.EXEC_REJECTED,
                             reason=O.CXL_REJ_UNKNOWN_ORDER)) == O.EX_CANCEL_REJECT
    assert state(env, r) == O.OS_CANCELLED
    assert oms.agg[0].tolist() == [0, 0, 0, 0] and led.reserved[V, 1] == 0
    assert O.counters(oms)["unknown_at_venue"] == 1
    assert apply(env, fill(FIRST, 9, 100, 4, 4, 0)) == O.EX_FILL
    assert led.pos[0]["qty"] == 4


def test_replace_rejected_as_unknown_order_ends_both_rows(env):
    oms, led = env
    r = _working(env, qty=10)
    n = O.replace_order(oms, led, r, 101, 15, T0)
    new_id = int(oms.orders[n]["clord_id"])
    assert apply(env, reject(new_id, orig=FIRST, cancel=1, reason=O.CXL_REJ_UNKNOWN_ORDER)) \
        == O.EX_CANCEL_REJECT
    assert state(env, n) == O.OS_REJECTED and state(env, r) == O.OS_CANCELLED
    assert oms.agg[0].tolist() == [0, 0, 0, 0] and led.reserved[V, 1] == 0
    assert O.quote_row(oms, 0) == -1


def test_new_order_reject_is_reported_and_second_reject_is_a_duplicate(env):
    oms, _ = env
    r = new(env)
    assert apply(env, reject(FIRST)) == O.EX_REJECT
    assert state(env, r) == O.OS_REJECTED
    assert oms.agg[0].tolist() == [0, 0, 0, 0]
    assert apply(env, reject(FIRST)) == O.EX_DUPLICATE


def _working(env, qty=10, price=100, quote=0):
    oms, _ = env
    r = new(env, BUY, price, qty, quote=quote)
    apply(env, ack(oms.orders[r]["clord_id"], R.EXEC_NEW))
    return r


def test_replace_pair_counts_once_holds_only_the_extra_and_confirm_moves_the_quote(env):
    oms, led = env
    r = _working(env, qty=10)
    n = O.check(O.replace_order(oms, led, r, 101, 15, T0))
    new_id = int(oms.orders[n]["clord_id"])
    assert state(env, r) == O.OS_PENDING_REPLACE and state(env, n) == O.OS_PENDING_REPLACE
    assert oms.agg[0, O.G_N_OPEN] == 1 and oms.agg[0, O.G_LIST_LEN] == 2
    assert oms.agg[0, O.G_OPEN_BUY] == 10 + 5
    assert O.reconcile(oms, 0, 101, 15, 0, 0) == O.ACT_WAIT
    assert apply(env, ack(new_id, R.EXEC_REPLACED, orig=FIRST, price=101, qty=15, leaves=15)) == O.EX_ACK
    assert state(env, r) == O.OS_REPLACED and state(env, n) == O.OS_NEW
    assert O.quote_row(oms, 0) == n
    assert oms.agg[0].tolist() == [15, 0, 1, 1]
    assert led.reserved[V, 1] == 101 * 15 * 10
    assert apply(env, ack(new_id, R.EXEC_REPLACED, orig=FIRST, price=101, qty=15, leaves=15)) == O.EX_DUPLICATE


def test_replace_reject_restores_the_old_order_and_drops_the_new_row(env):
    oms, led = env
    r = _working(env, qty=10)
    n = O.replace_order(oms, led, r, 101, 15, T0)
    new_id = int(oms.orders[n]["clord_id"])
    assert apply(env, reject(new_id, orig=FIRST, cancel=1)) == O.EX_CANCEL_REJECT
    assert state(env, n) == O.OS_REJECTED and state(env, r) == O.OS_NEW
    assert oms.agg[0].tolist() == [10, 0, 1, 1]
    assert led.reserved[V, 1] == 100 * 10 * 10
    assert O.quote_row(oms, 0) == r


def test_fill_on_new_id_before_replaced_ack_confirms_the_replace(env):
    oms, led = env
    r = _working(env, qty=10)
    apply(env, fill(FIRST, 1, 100, 2, 2, 8))
    n = O.replace_order(oms, led, r, 101, 8, T0)          # keep 8 remaining, total qty 10
    assert oms.orders[n]["qty"] == 10
    new_id = int(oms.orders[n]["clord_id"])
    assert apply(env, fill(new_id, 2, 101, 3, 5, 5, orig=FIRST)) == O.EX_FILL
    assert state(env, r) == O.OS_REPLACED and state(env, n) == O.OS_PARTIAL
    assert (oms.orders[n]["cum_qty"], oms.orders[n]["leaves"]) == (5, 5)
    assert oms.agg[0].tolist() == [5, 0, 1, 1]
    assert apply(env, ack(new_id, R.EXEC_REPLACED, orig=FIRST, price=101, qty=10, leaves=8, cum=2)) == O.EX_DUPLICATE
    assert (oms.orders[n]["cum_qty"], oms.orders[n]["leaves"]) == (5, 5)


def test_old_order_filled_while_replace_pending_drops_the_replacement(env):
    oms, led = env
    r = _working(env, qty=10)
    n = O.replace_order(oms, led, r, 101, 12, T0)
    apply(env, fill(FIRST, 1, 100, 10, 10, 0))
    assert state(env, r) == O.OS_FILLED and state(env, n) == O.OS_REJECTED
    assert oms.agg[0].tolist() == [0, 0, 0, 0]
    assert led.reserved[V, 1] == 0


def test_refusals_for_bad_args_busy_and_full_live_list(env):
    oms, led = env
    assert O.new_order(oms, led, 0, BUY, 100, 0, R.TIF_GTC, 0, -1, T0) == O.OM_BAD_ARGS
    assert O.new_order(oms, led, 0, 9, 100, 1, R.TIF_GTC, 0, -1, T0) == O.OM_BAD_ARGS
    rows = [new(env, BUY, 100 - i, 1) for i in range(8)]
    assert O.new_order(oms, led, 0, BUY, 50, 1, R.TIF_GTC, 0, -1, T0) == O.OM_LIVE_FULL
    assert O.replace_order(oms, led, rows[0], 101, 1, T0) == O.OM_BUSY      # still pending new
    with pytest.raises(O.OmsError, match="too many live orders"):
        O.check(O.OM_LIVE_FULL)


def test_terminal_rows_are_recycled_oldest_first_and_recent_ones_stay_findable():
    spec = dict(venue="sim", instrument=0, base_asset=0, quote_asset=1, tick_e8=1, lot_e8=1)
    led = P.make_ledger([spec], 2)
    oms = O.make_oms(8, 1, max_live=4, first_clord_id=1)
    for i in range(20):
        r = O.new_order(oms, led, 0, BUY, 10, 1, R.TIF_GTC, 0, -1, T0)
        a = ack(i + 1, R.EXEC_REJECTED, venue=R.VENUE_SIM, instrument=0)
        assert O.apply_exec(oms, led, a, T0) == O.EX_REJECT
        assert r >= 0
    assert O.counters(oms)["recycled"] == 12
    for cid in range(1, 13):
        assert O.find_order(oms, cid) == -1
    for cid in range(13, 21):
        assert oms.orders[O.find_order(oms, cid)]["clord_id"] == cid


def test_exec_id_set_matches_a_model_under_random_churn():
    oms = O.make_oms(16, 1, max_live=4, exec_id_capacity=64)        # remembers the last 32 ids
    rng = random.Random(7)
    window: list[int] = []
    for _ in range(3000):
        key = rng.randrange(1, 200)
        found = O._seen_find(oms.seen, np.uint64(key)) >= 0
        assert found == (key in window)
        if not found:
            O._seen_add(oms, np.uint64(key))
            window.append(key)
            if len(window) > 32:
                window.pop(0)
    assert (oms.seen != 0).sum() == 32


@pytest.mark.parametrize("desired_price,desired_qty,expected", [
    (100, 10, O.ACT_NONE),           # identical
    (102, 10, O.ACT_NONE),           # price moved exactly the threshold (2 ticks)
    (103, 10, O.ACT_REPLACE),        # one tick beyond
    (97, 10, O.ACT_REPLACE),         # beyond, downwards
    (100, 13, O.ACT_NONE),           # qty moved exactly the threshold (3 lots)
    (100, 14, O.ACT_REPLACE),
    (100, 6, O.ACT_REPLACE),
    (100, 0, O.ACT_CANCEL),
])
def test_reconcile_against_a_working_order_around_the_thresholds(env, desired_price, desired_qty, expected):
    oms, _ = env
    _working(env, qty=10, price=100, quote=2)
    assert O.reconcile(oms, 2, desired_price, desired_qty, 2, 3) == expected


def test_reconcile_without_live_order_and_while_pending(env):
    oms, _ = env
    assert O.reconcile(oms, 1, 100, 5, 2, 3) == O.ACT_NEW
    assert O.reconcile(oms, 1, 100, 0, 2, 3) == O.ACT_NONE
    r = new(env, quote=1)
    assert O.reconcile(oms, 1, 150, 5, 2, 3) == O.ACT_WAIT
    apply(env, reject(int(oms.orders[r]["clord_id"])))
    assert O.reconcile(oms, 1, 100, 5, 2, 3) == O.ACT_NEW            # rejected: quote slot freed


def test_order_records_carry_ids_prices_and_origin(env):
    oms, led = env
    r = _working(env, qty=10, price=100)
    buf = np.zeros(R.ORDER_RECORD_SIZE, np.uint8)
    buf[:] = 0xAB                                   # a ring slot's previous record
    O.write_new(oms, r, buf, 12345, 2, R.F_POST_ONLY)
    w = buf.view(R.NEW_ORDER)[0]
    assert (w["rtype"], w["venue"], w["instrument"], w["clord_id"], w["price"], w["qty"], w["side"]) == \
        (R.RT_NEW_ORDER, V, 3, FIRST, 100, 10, BUY)
    assert (w["origin_tsc"], w["session"], w["strategy"], w["ord_type"]) == (12345, 2, 7, R.ORD_LIMIT)
    assert (w["flags"], w["tif"]) == (R.F_POST_ONLY, R.TIF_GTC)
    assert not buf[72:].any() and (buf[:8] == 0xAB).all()   # tail zeroed; ``ver`` is the ring's
    cid = O.cancel_order(oms, r, T0)
    O.write_cancel(oms, r, buf, 1, 0)
    c = buf.view(R.CANCEL)[0]
    assert (c["rtype"], c["clord_id"], c["orig_clord_id"], c["qty"]) == (R.RT_CANCEL, cid, FIRST, 10)
    assert (c["flags"], c["side"], c["strategy"]) == (0, BUY, 7) and not buf[65:].any()
    apply(env, reject(cid, orig=FIRST, cancel=1))
    n = O.replace_order(oms, led, r, 99, 4, T0)
    O.write_replace(oms, n, buf, 1, 0, 0)
    p = buf.view(R.REPLACE)[0]
    assert (p["rtype"], p["orig_clord_id"], p["price"], p["qty"]) == (R.RT_REPLACE, FIRST, 99, 4)
    assert (p["side"], p["ord_type"], p["tif"]) == (BUY, R.ORD_LIMIT, R.TIF_GTC)
    out = np.zeros(8, np.int32)
    assert O.live_rows(oms, 0, out) == 2 and sorted(out[:2]) == sorted([r, n])


# --- randomized: a consistent venue, reports duplicated and reordered ----------------------------
def _check_invariants(oms, led):
    o = oms.orders
    live = (o["state"] != O.OS_FREE) & ~np.isin(o["state"], [O.OS_FILLED, O.OS_CANCELLED, O.OS_REPLACED,
                                                              O.OS_REJECTED])
    buy = live & (o["side"] == BUY)
    sell = live & (o["side"] == SELL)
    assert oms.agg[0, O.G_OPEN_BUY] == o["exposure"][buy].sum()
    assert oms.agg[0, O.G_OPEN_SELL] == o["exposure"][sell].sum()
    assert oms.agg[0, O.G_N_OPEN] == (live & (o["counted"] == 1)).sum()
    assert oms.agg[0, O.G_LIST_LEN] == live.sum()
    assert sorted(oms.live[0, :live.sum()]) == sorted(np.nonzero(live)[0])
    assert (o["exposure"][~live] == 0).all() and (o["exposure"] >= 0).all()
    assert led.reserved[V, 1] == o["reserved_e8"][buy].sum()
    assert led.reserved[V, 0] == o["reserved_e8"][sell].sum()


class _Venue:
    """Consistent exchange side: every request gets exactly one answer, fills have unique ids."""

    def __init__(self, rng):
        self.rng = rng
        self.chains = {}       # current clord id -> [price, qty, cum, side, open]
        self.out = []
        self.exec_id = 0
        self.fills = {}        # exec id -> signed qty

    def new(self, cid, side, price, qty):
        if self.rng.random() < 0.1:
            self.out.append(reject(cid))
            return
        self.chains[cid] = [price, qty, 0, side, True]
        self.out.append(ack(cid, R.EXEC_NEW, price=price, qty=qty, leaves=qty))

    def fill_some(self):
        open_ids = [c for c, ch in self.chains.items() if ch[4]]
        if not open_ids:
            return
        cid = self.rng.choice(open_ids)
        ch = self.chains[cid]
        q = self.rng.randint(1, ch[1] - ch[2])
        ch[2] += q
        self.exec_id += 1
        self.fills[self.exec_id] = q if ch[3] == BUY else -q
        self.out.append(fill(cid, self.exec_id, ch[0], q, ch[2], ch[1] - ch[2]))
        if ch[2] == ch[1]:
            ch[4] = False

    def cancel(self, cancel_id, cid):
        ch = self.chains.get(cid)
        if ch and ch[4]:
            ch[4] = False
            self.out.append(ack(cancel_id, R.EXEC_CANCELED, orig=cid, cum=ch[2]))
        else:
            self.out.append(reject(cancel_id, orig=cid, cancel=1, ord_status=ord("2")))

    def replace(self, new_id, cid, price, total):
        ch = self.chains.get(cid)
        if ch and ch[4] and total > ch[2] and self.rng.random() < 0.8:
            ch[4] = False
            self.chains[new_id] = [price, total, ch[2], ch[3], True]
            self.out.append(ack(new_id, R.EXEC_REPLACED, orig=cid, price=price, qty=total,
                                leaves=total - ch[2], cum=ch[2]))
        else:
            self.out.append(reject(new_id, orig=cid, cancel=1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_duplicated_reordered_reports_book_every_fill_once_and_keep_aggregates_exact(seed):
    rng = random.Random(seed)
    spec = dict(venue="binance", instrument=3, base_asset=0, quote_asset=1, tick_e8=10**6, lot_e8=10**3)
    led = P.make_ledger([spec], 2)
    oms = O.make_oms(1024, 1, max_live=16, first_clord_id=FIRST)
    venue = _Venue(rng)
    queue = []
    unknown_sent = 0
    for step in range(1500):
        act = rng.random()
        working = np.nonzero(np.isin(oms.orders["state"], [O.OS_NEW, O.OS_PARTIAL]))[0].tolist()
        if act < 0.25:
            side = rng.choice([BUY, SELL])
            r = O.new_order(oms, led, 0, side, rng.randint(90, 110), rng.randint(1, 20), R.TIF_GTC, 0, -1, T0)
            if r >= 0:
                venue.new(int(oms.orders[r]["clord_id"]), side, int(oms.orders[r]["price"]), int(oms.orders[r]["qty"]))
        elif act < 0.35 and working:
            r = rng.choice(working)
            cid = O.cancel_order(oms, r, T0)
            venue.cancel(cid, int(oms.orders[r]["clord_id"]))
        elif act < 0.45 and working:
            r = rng.choice(working)
            n = O.replace_order(oms, led, r, rng.randint(90, 110), rng.randint(1, 20), T0)
            if n >= 0:
                venue.replace(int(oms.orders[n]["clord_id"]), int(oms.orders[r]["clord_id"]),
                              int(oms.orders[n]["price"]), int(oms.orders[n]["qty"]))
        elif act < 0.7:
            venue.fill_some()
        queue.extend(venue.out)
        venue.out.clear()
        if rng.random() < 0.02:
            queue.append(fill(123, 10**9 + step, 100, 1, 1, 0))           # unknown order
        while queue and rng.random() < 0.6:
            rec = queue.pop(rng.randrange(min(4, len(queue))))            # local reordering
            if rng.random() < 0.1:
                queue.append(rec.copy())                                   # a duplicate later
            unknown_sent += int(rec.view(R.ACK)[0]["clord_id"] == 123)
            O.apply_exec(oms, led, rec, T0 + step)
        _check_invariants(oms, led)
    while queue:
        rec = queue.pop(rng.randrange(min(4, len(queue))))
        unknown_sent += int(rec.view(R.ACK)[0]["clord_id"] == 123)
        O.apply_exec(oms, led, rec, T0)
    _check_invariants(oms, led)
    assert led.pos[0]["qty"] == sum(venue.fills.values())
    assert led.pos[0]["n_fills"] == len(venue.fills)
    assert not np.isin(oms.orders["state"], [O.OS_PENDING_NEW, O.OS_PENDING_CANCEL, O.OS_PENDING_REPLACE]).any()
    c = O.counters(oms)
    assert unknown_sent > 0 and c["exec_unknown"] == unknown_sent and c["exec_invalid"] == 0
    assert c["exec_fill"] == len(venue.fills)

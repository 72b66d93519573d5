"""The engine's compiled step on plain arrays: orders from quotes, risk, exec reports, kill."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.hotpath import clock, control, engine, records, ring
from appliance.hotpath.engine import EngineState
from appliance.hotpath.strategies import avellaneda_stoikov as AS
from appliance.hotpath.strategies import base
from tests.engine import mdsource
from tests.engine.mdsource import book_frame, rec, stack

B = records.VENUE_BINANCE


@pytest.fixture(scope="module")
def cal():
    return clock.calibration()


def _engine(cal, settings=None, params=None, n=1):
    tables = [{"kind": "avellaneda_stoikov", "venue": "binance", "symbol": s,
               "params": {"warmup_events": 0, "vol_widen": 0, "horizon_events": 0,
                          **(params or {})}} for s in ["AAA", "BBB"][:n]]
    es = EngineState({"binance": ["AAA", "BBB"]}, tables, settings, cal=cal, clord_base=1,
                     books_valid=True)
    oh, od = ring.local_ring(records.ORDER_RECORD_SIZE, 1 << 12)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    return es, oh, od, words


def _orders(oh, od):
    return [(int(o[8]), o.view(records.RECORD_DTYPES[int(o[8])])[0])
            for o in mdsource.order_records(oh, od)]


def _frame(es, oh, od, words, bids=((990, 5),), asks=((1010, 5),), origin=100, instrument=0):
    """One venue frame that makes the book exactly ``bids`` / ``asks`` (old levels removed)."""
    b = es.book_map[B, instrument]
    keep_b, keep_a = {p for p, _ in bids}, {p for p, _ in asks}
    gone_b = [(int(es.px[b, 0, k]), 0) for k in range(es.n[b, 0]) if es.px[b, 0, k] not in keep_b]
    gone_a = [(int(es.px[b, 1, k]), 0) for k in range(es.n[b, 1]) if es.px[b, 1, k] not in keep_a]
    frame = book_frame(gone_b + list(bids), gone_a + list(asks), origin, instrument=instrument)
    return es.replay(stack(frame), oh, od, words)


def _exec(es, words, rtype, **fields):
    r = np.zeros(1, records.RECORD_DTYPES[rtype])
    r[0]["rtype"] = rtype
    for k, v in fields.items():
        r[0][k] = v
    return engine.handle_exec(r.view(np.uint8).reshape(-1), es.px, es.n, es.meta, es.params,
                              es.state, es.quotes, es.ords, es.pnl, es.risk, es.stats, words,
                              es.cal)


def test_consistent_book_makes_a_two_sided_quote_with_origin_and_session():
    es, oh, od, words = _engine(cal=clock.calibration())
    _frame(es, oh, od, words, origin=12345)
    o = _orders(oh, od)
    assert [t for t, _ in o] == [records.RT_NEW_ORDER] * 2
    bid, ask = o[0][1], o[1][1]
    assert bid["side"] == records.SIDE_BUY and ask["side"] == records.SIDE_SELL
    assert bid["price"] < 1010 and ask["price"] > 990
    assert bid["origin_tsc"] == 12345 and bid["venue"] == B and bid["instrument"] == 0
    assert bid["tif"] == records.TIF_GTC and bid["flags"] & records.F_POST_ONLY
    assert bid["clord_id"] != ask["clord_id"]
    assert es.stats[engine.ST_LAT_N] == 2          # latency measured on every order
    assert es.stats[engine.ST_OPEN] == 2


def test_moved_book_replaces_the_working_orders():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    first = _orders(oh, od)
    _frame(es, oh, od, words, bids=((1090, 5),), asks=((1110, 5),))
    o = _orders(oh, od)[2:]
    assert [t for t, _ in o] == [records.RT_REPLACE] * 2
    assert o[0][1]["orig_clord_id"] == first[0][1]["clord_id"]
    assert o[0][1]["price"] > first[0][1]["price"]


def test_updates_without_a_frame_end_send_nothing():
    es, oh, od, words = _engine(clock.calibration())
    recs = book_frame(((990, 5),), ((1010, 5),), 1)[:-1]      # no BATCH_END: inconsistent book
    es.replay(stack(recs), oh, od, words)
    assert _orders(oh, od) == []


def test_price_outside_the_collar_is_refused_by_risk_and_counted():
    es, oh, od, words = _engine(clock.calibration(), {"collar_ticks": 0},
                                params={"min_half_spread": 50})
    _frame(es, oh, od, words)
    assert _orders(oh, od) == []
    assert es.stats[engine.ST_RISK_REJECTS] == 2


def test_max_open_orders_limits_new_orders():
    es, oh, od, words = _engine(clock.calibration(), {"max_open_orders": 1})
    _frame(es, oh, od, words)
    assert len(_orders(oh, od)) == 1 and es.stats[engine.ST_RISK_REJECTS] == 1


def test_book_invalid_status_pulls_the_quotes_with_cancels():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    es.replay(stack([rec(records.RT_BOOK_STATUS, B, 0, 7, status=records.BOOK_INVALID,
                         reason=records.BR_GAP)]), oh, od, words)
    o = _orders(oh, od)
    assert [t for t, _ in o[2:]] == [records.RT_CANCEL] * 2
    assert {r["orig_clord_id"] for _, r in o[2:]} == {r["clord_id"] for _, r in o[:2]}
    # frames while invalid are ignored; a VALID status and a frame quote again
    _frame(es, oh, od, words)
    assert len(_orders(oh, od)) == 4
    es.replay(stack([rec(records.RT_BOOK_STATUS, B, 0, 8, status=records.BOOK_VALID)]), oh, od,
              words)
    _frame(es, oh, od, words)
    assert [t for t, _ in _orders(oh, od)[4:]] == [records.RT_NEW_ORDER] * 2


def test_unknown_instrument_and_bad_side_are_counted_not_applied():
    es, oh, od, words = _engine(clock.calibration())
    es.replay(stack([rec(records.RT_L2_UPDATE, B, 99, 1, price=5, qty=1, side=1),
                     rec(records.RT_L2_UPDATE, records.VENUE_KRAKEN, 0, 1, price=5, qty=1, side=1),
                     rec(records.RT_L2_UPDATE, B, 0, 1, price=5, qty=1, side=9)]), oh, od, words)
    assert es.stats[engine.ST_UNKNOWN_INSTR] == 2 and es.stats[engine.ST_BOOK_ERRORS] == 1
    assert es.n.sum() == 0


def test_fill_moves_position_inventory_and_frees_the_filled_slot():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    bid = _orders(oh, od)[0][1]
    rc = _exec(es, words, records.RT_FILL, clord_id=bid["clord_id"], last_price=bid["price"],
               last_qty=1, leaves_qty=0, side=records.SIDE_BUY, fee=3)
    assert rc == engine.STEP_OK
    assert es.pnl[0, 0, engine.PNL_POS] == 1
    assert es.pnl[0, 0, engine.PNL_CASH] == -bid["price"]
    assert es.state[0, AS.S_INV] == 1
    assert es.ords[0, 0, engine.O_STATE] == engine.OS_NONE and es.stats[engine.ST_OPEN] == 1
    _frame(es, oh, od, words)                       # the bid is re-placed on the next frame
    assert _orders(oh, od)[-1][0] == records.RT_NEW_ORDER


def test_exec_report_for_an_unknown_order_is_counted_and_ignored():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    _exec(es, words, records.RT_FILL, clord_id=(77 << 16) | 1, last_price=1, last_qty=1,
          side=records.SIDE_BUY)
    assert es.stats[engine.ST_EXEC_UNMATCHED] == 1 and es.pnl.sum() == 0


def test_reject_of_a_new_order_frees_its_slot():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    ask = _orders(oh, od)[1][1]
    _exec(es, words, records.RT_REJECT, clord_id=ask["clord_id"], is_cancel_reject=0)
    assert es.ords[0, 1, engine.O_STATE] == engine.OS_NONE
    assert es.stats[engine.ST_EXEC_REJECTS] == 1 and es.stats[engine.ST_OPEN] == 1


def test_kill_cancels_every_working_order_acks_and_blocks_new_orders():
    cal = clock.calibration()
    es, oh, od, words = _engine(cal, n=2)
    _frame(es, oh, od, words, instrument=0)
    _frame(es, oh, od, words, instrument=1)
    working = {r["clord_id"] for _, r in _orders(oh, od)}
    assert len(working) == 4
    epoch = control.request_kill(words, control.SOURCE_CLI, 1)
    _frame(es, oh, od, words, bids=((1090, 5),), asks=((1110, 5),))
    o = _orders(oh, od)[4:]
    assert [t for t, _ in o] == [records.RT_CANCEL] * 4
    assert {r["orig_clord_id"] for _, r in o} == working
    assert words[control.KILL_ACK_OFF // 8] == epoch
    assert words[control.RISK_STATE_OFF // 8] == records.RISK_HALTED
    for k in range(5):                               # md keeps coming: nothing goes out
        _frame(es, oh, od, words, bids=((1000 + k, 5),), asks=((1020 + k, 5),), instrument=k & 1)
    assert len(_orders(oh, od)) == 8
    # manual reset: trading resumes
    control.store_release_py(words, control.KILL_OFF, 0)
    _frame(es, oh, od, words)
    assert _orders(oh, od)[-1][0] == records.RT_NEW_ORDER
    assert words[control.RISK_STATE_OFF // 8] == records.RISK_RUNNING


def test_max_loss_sets_the_kill_switch_and_the_engine_halts():
    es, oh, od, words = _engine(clock.calibration(), {"max_loss": 100})
    _frame(es, oh, od, words)
    bid = _orders(oh, od)[0][1]
    rc = _exec(es, words, records.RT_FILL, clord_id=bid["clord_id"], last_price=1000,
               last_qty=1, leaves_qty=0, side=records.SIDE_BUY)
    assert rc == engine.STEP_OK                        # marked at mid 1000: flat PnL
    _frame(es, oh, od, words, bids=((880, 5),), asks=((900, 5),))    # mid 890: -110 tick-lots
    assert control.kill_requested(words)
    assert words[control._OFF_KILL_SOURCE // 8] == control.SOURCE_MAX_LOSS
    es.replay(stack([rec(records.RT_TRADE, B, 0, 1, price=1, qty=1, side=1)]), oh, od, words)
    assert es.stats[engine.ST_HALTED] == 1 and es.stats[engine.ST_OPEN] == 0


def test_engine_settings_reject_unknown_keys_by_name():
    with pytest.raises(engine.EngineError, match=r"engine\.max_los: unknown key"):
        engine.engine_settings({"max_los": 1})
    with pytest.raises(engine.EngineError, match=r"engine\.collar_ticks: expected an integer"):
        engine.engine_settings({"collar_ticks": -1})


def test_engine_state_from_a_toml_config_with_both_strategy_kinds(cal):
    from appliance import config
    cfg = config.parse({
        "venues": [{"name": "binance", "symbols": ["NKNUSDT", "BLZETH"]},
                   {"name": "kraken", "symbols": ["XMR/USD"]}],
        "engine": {"max_open_orders": 10},
        "strategies": [
            {"kind": "avellaneda_stoikov", "name": "mm-nkn", "venue": "binance",
             "symbol": "BLZETH", "params": {"gamma": 0.2}},
            {"kind": "cross_venue", "venues": ["binance", "kraken"],
             "symbols": ["NKNUSDT", "XMR/USD"], "sessions": [0, 1], "params": {"margin": 3}},
        ]})
    es = EngineState.from_config(cfg, cal=cal, clord_base=1)
    assert es.names == ["mm-nkn", "cross_venue-1"]
    assert es.book_keys == [("binance", "BLZETH"), ("binance", "NKNUSDT"), ("kraken", "XMR/USD")]
    assert es.book_map[records.VENUE_BINANCE, 1] == 0 and es.book_map[records.VENUE_KRAKEN, 0] == 2
    assert es.meta[1, base.M_SESSION + 1] == 1   # leg B goes out on session 1
    assert es.risk[engine.R_MAX_OPEN] == 10
    with pytest.raises(Exception, match=r"strategies\[0\]\.venues: avellaneda_stoikov has one leg"):
        EngineState({"binance": ["NKNUSDT"]}, [{"kind": "avellaneda_stoikov",
                                                 "venues": ["binance"], "symbols": ["NKNUSDT"]}],
                    cal=cal)


@pytest.mark.timeout(120)
def test_step_polls_md_and_exec_rings_heartbeats_and_returns_to_python_when_idle(cal):
    from appliance.hotpath import wait
    es, oh, od, words = _engine(cal)
    mh, mdd = ring.local_ring(records.MD_RECORD_SIZE, 256)
    eh, ed = ring.local_ring(records.EXEC_RECORD_SIZE, 256)
    mc, ec = ring.local_cursor(mh), ring.local_cursor(eh)
    for r in book_frame(((990, 5),), ((1010, 5),), 55):
        ring.publish(mh, mdd, r)
    wp, ws = wait.make("backoff", None, 10, 1_000, 100_000), wait.new_state()
    args = ((mh,), (mdd,), (mc,), eh, ed, ec, oh, od, words, 0, cal, es.px, es.qty, es.n,
            es.book_map, es.bstate, es.meta, es.params, es.state, es.quotes, es.ords, es.pnl,
            es.risk, es.stats, es.lat_hist, wp, ws, es.md_buf, es.ex_buf)
    # a huge iteration budget: the step still returns (about every millisecond when idle)
    assert engine.step(*args, 10**12) == engine.STEP_OK
    o = _orders(oh, od)
    assert [t for t, _ in o] == [records.RT_NEW_ORDER] * 2
    hb = control.ACTORS_OFF + control.ACTOR_HB_OFF
    assert words[hb // 8] > 0
    fill = np.zeros(1, records.FILL)
    fill[0]["rtype"] = records.RT_FILL
    fill[0]["clord_id"] = o[0][1]["clord_id"]
    fill[0]["last_price"], fill[0]["last_qty"], fill[0]["leaves_qty"] = o[0][1]["price"], 1, 0
    fill[0]["side"] = records.SIDE_BUY
    ring.publish(eh, ed, fill.view(np.uint8).reshape(-1))
    engine.step(*args, 10**12)
    assert es.stats[engine.ST_FILLS] == 1 and es.pnl[0, 0, engine.PNL_POS] == 1
    control.request_kill(words, control.SOURCE_CLI, 1)
    assert engine.step(*args, 10**12) == engine.STEP_KILL_SEEN
    assert _orders(oh, od)[-1][0] == records.RT_CANCEL

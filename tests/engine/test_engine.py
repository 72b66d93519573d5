"""The engine's compiled step on plain arrays: orders from quotes, risk, exec reports, kill."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.transport import clock, control, hist, records, ring
from appliance.engine import kernels as engine, positions, risk
from appliance.engine import state as engine_state
from appliance.engine.state import EngineState
from appliance.engine.strategies import avellaneda_stoikov as AS
from appliance.engine.strategies import base
from benches import instant_venue
from tests.configs import instruments_tables
from tests.engine import mdsource
from tests.engine.mdsource import book_frame, rec, stack

B = records.VENUE_BINANCE
# AAA on a 0.01 quote tick and a whole-unit lot: 1000 ticks x 1 lot = 10.00 quote
GRID = {"instruments": {"binance:AAA": {"tick_e8": 10**6, "lot_e8": 10**8}}}


@pytest.fixture(scope="module")
def cal():
    return clock.calibration()


def _engine(cal, settings=None, params=None, n=1, risk_limits=None, risk_top=None):
    tables = [{"kind": "avellaneda_stoikov", "venue": "binance", "symbol": s,
               "params": {"warmup_events": 0, "vol_widen": 0, "horizon_events": 0,
                          **(params or {})}} for s in ["AAA", "BBB"][:n]]
    table = engine_state.default_risk_table(["binance"])
    table["limits"].update(risk_limits or {})
    table.update(risk_top or {})
    es = EngineState({"binance": ["AAA", "BBB"]}, tables, settings, cal=cal, clord_base=1,
                     books_valid=True, risk_table=table)
    oh, od = ring.local_ring(records.ORDER_RECORD_SIZE, 1 << 12)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    es.attach(oh, od, words)
    return es, oh, od, words


def _orders(oh, od):
    return [(int(o[8]), o.view(records.RECORD_DTYPES[int(o[8])])[0])
            for o in mdsource.order_records(oh, od)]


def _frame(es, oh, od, words, bids=((990, 5),), asks=((1010, 5),), origin=100, instrument=0,
           acks=True):
    """One venue frame that makes the book exactly ``bids`` / ``asks`` (old levels removed);
    with ``acks`` the venue accepts every request the frame caused at once."""
    b = es.book_map[B, instrument]
    keep_b, keep_a = {p for p, _ in bids}, {p for p, _ in asks}
    gone_b = [(int(es.px[b, 0, k]), 0) for k in range(es.n[b, 0]) if es.px[b, 0, k] not in keep_b]
    gone_a = [(int(es.px[b, 1, k]), 0) for k in range(es.n[b, 1]) if es.px[b, 1, k] not in keep_a]
    frame = book_frame(gone_b + list(bids), gone_a + list(asks), origin, instrument=instrument)
    return instant_venue.feed(es, stack(frame), acks)


def _exec(es, words, rtype, **fields):
    r = np.zeros(1, records.RECORD_DTYPES[rtype])
    r[0]["rtype"] = rtype
    r[0]["venue"] = B
    if rtype == records.RT_FILL:
        r[0]["cum_qty"] = fields.get("last_qty", 0)
    for k, v in fields.items():
        r[0][k] = v
    return es.exec_record(r.view(np.uint8).reshape(-1))


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
    assert es.lat_hist[hist.H_COUNT] == 2            # latency measured on every order
    assert es.open_orders() == 2


def test_moved_book_replaces_the_ask_first_and_the_bid_once_the_ask_replace_is_confirmed():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    first = _orders(oh, od)
    _frame(es, oh, od, words, bids=((1090, 5),), asks=((1110, 5),))
    o = _orders(oh, od)[2:]
    # the ask moves away from the bid first; the new bid would cross the ask's old price while
    # that replace is in flight, so self-trade prevention holds it back until the ack
    assert [t for t, _ in o] == [records.RT_REPLACE]
    assert o[0][1]["orig_clord_id"] == first[1][1]["clord_id"]
    assert o[0][1]["price"] > first[1][1]["price"]
    assert es.rk.denials[risk.RJ_SELF_TRADE] == 1
    _frame(es, oh, od, words, bids=((1090, 5),), asks=((1110, 5),))   # next event: retried
    o = _orders(oh, od)[3:]
    assert [t for t, _ in o] == [records.RT_REPLACE]
    assert o[0][1]["orig_clord_id"] == first[0][1]["clord_id"]
    assert o[0][1]["price"] > first[0][1]["price"]


def test_updates_without_a_frame_end_send_nothing():
    es, oh, od, words = _engine(clock.calibration())
    recs = book_frame(((990, 5),), ((1010, 5),), 1)[:-1]      # no BATCH_END: inconsistent book
    es.feed(stack(recs))
    assert _orders(oh, od) == []


def test_price_outside_the_collar_is_refused_by_risk_and_counted():
    es, oh, od, words = _engine(clock.calibration(), risk_limits={"collar_bps": 100},
                                params={"min_half_spread": 50})
    _frame(es, oh, od, words)                      # mid 1000, quotes 50 ticks away: 5% > 1%
    assert _orders(oh, od) == []
    assert es.stats[engine.ST_RISK_REJECTS] == 2
    assert es.rk.denials[risk.RJ_COLLAR] == 2


def test_max_open_orders_limits_new_orders():
    es, oh, od, words = _engine(clock.calibration(), risk_limits={"max_open_orders": 1})
    _frame(es, oh, od, words)
    assert len(_orders(oh, od)) == 1 and es.stats[engine.ST_RISK_REJECTS] == 1
    assert es.rk.denials[risk.RJ_OPEN_ORDERS] == 1


def test_book_invalid_status_pulls_the_quotes_with_cancels():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    instant_venue.feed(es, stack([rec(records.RT_BOOK_STATUS, B, 0, 7,
                                      status=records.BOOK_INVALID, reason=records.BR_GAP)]))
    o = _orders(oh, od)
    assert [t for t, _ in o[2:]] == [records.RT_CANCEL] * 2
    assert {r["orig_clord_id"] for _, r in o[2:]} == {r["clord_id"] for _, r in o[:2]}
    # frames while invalid are ignored; a VALID status and a frame quote again
    _frame(es, oh, od, words)
    assert len(_orders(oh, od)) == 4
    es.feed(stack([rec(records.RT_BOOK_STATUS, B, 0, 8, status=records.BOOK_VALID)]))
    _frame(es, oh, od, words)
    assert [t for t, _ in _orders(oh, od)[4:]] == [records.RT_NEW_ORDER] * 2


def test_unknown_instrument_and_bad_side_are_counted_not_applied():
    es, oh, od, words = _engine(clock.calibration())
    es.feed(stack([rec(records.RT_L2_UPDATE, B, 99, 1, price=5, qty=1, side=1),
                   rec(records.RT_L2_UPDATE, records.VENUE_KRAKEN, 0, 1, price=5, qty=1, side=1),
                   rec(records.RT_L2_UPDATE, B, 0, 1, price=5, qty=1, side=9)]))
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
    assert es.led.pos[0]["qty"] == 1 and es.open_orders() == 1
    _frame(es, oh, od, words)                       # the bid is re-placed on the next frame
    assert _orders(oh, od)[-1][0] == records.RT_NEW_ORDER


def test_fill_of_an_unknown_order_moves_the_ledger_once_and_other_reports_are_counted():
    # an order the engine lost (sent before a restart): its fill is money all the same
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words)
    for _ in range(2):                     # the same report twice (exec id): booked once
        _exec(es, words, records.RT_FILL, clord_id=(77 << 16) | 1, last_price=1000,
              last_qty=2, side=records.SIDE_BUY, instrument=0, exec_id=99)
    assert es.led.pos[0]["qty"] == 2 and es.led.pos[0]["n_fills"] == 1
    assert es.stats[engine.ST_ORPHAN_FILLS] == 1 and es.stats[engine.ST_FILLS] == 1
    assert es.pnl.sum() == 0                # no strategy can be named
    _exec(es, words, records.RT_ACK, clord_id=(77 << 16) | 2, exec_type=records.EXEC_NEW)
    _exec(es, words, records.RT_FILL, clord_id=(77 << 16) | 3, last_price=1000, last_qty=1,
          side=records.SIDE_BUY, instrument=200, exec_id=100)   # an instrument not traded
    assert es.stats[engine.ST_EXEC_UNMATCHED] == 2 and es.led.pos[0]["qty"] == 2


def test_reject_of_a_new_order_frees_its_slot():
    es, oh, od, words = _engine(clock.calibration())
    _frame(es, oh, od, words, acks=False)
    ask = _orders(oh, od)[1][1]
    _exec(es, words, records.RT_REJECT, clord_id=ask["clord_id"], is_cancel_reject=0)
    assert es.oms.quote_map[1] == -1                # slot 1 (the ask) is free again
    assert es.stats[engine.ST_EXEC_REJECTS] == 1 and es.open_orders() == 1


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
    assert instant_venue.acknowledge(es) == 4       # the venue confirms the cancels
    assert es.open_orders() == 0
    # manual reset: trading resumes
    control.store_release_py(words, control.KILL_OFF, 0)
    _frame(es, oh, od, words)
    assert _orders(oh, od)[-1][0] == records.RT_NEW_ORDER
    assert words[control.RISK_STATE_OFF // 8] == records.RISK_RUNNING


def test_max_loss_sets_the_kill_switch_and_the_engine_halts():
    es, oh, od, words = _engine(clock.calibration(), GRID, risk_top={"max_loss": 1.0})
    _frame(es, oh, od, words)
    bid = _orders(oh, od)[0][1]
    rc = _exec(es, words, records.RT_FILL, clord_id=bid["clord_id"], last_price=1000,
               last_qty=1, leaves_qty=0, side=records.SIDE_BUY, exec_id=1)
    assert rc == engine.STEP_OK                        # marked at mid 1000: flat PnL
    assert not control.kill_requested(words)
    _frame(es, oh, od, words, bids=((880, 5),), asks=((900, 5),))    # mid 890: -1.10 quote
    assert control.kill_requested(words)
    assert words[control._OFF_KILL_SOURCE // 8] == control.SOURCE_MAX_LOSS
    assert es.rk.state[risk.R_STATE] == records.RISK_HALTED
    assert es.rk.state[risk.R_CAUSE] == risk.CB_MAX_LOSS
    n = len(_orders(oh, od))
    es.feed(stack([rec(records.RT_TRADE, B, 0, 1, price=1, qty=1, side=1)]))
    assert es.stats[engine.ST_HALTED] == 1
    assert words[control.RISK_STATE_OFF // 8] == records.RISK_HALTED
    o = _orders(oh, od)[n:]                            # the kill cancelled the working ask
    assert [t for t, _ in o] == [records.RT_CANCEL]
    assert o[0][1]["orig_clord_id"] == _orders(oh, od)[1][1]["clord_id"]


def test_engine_settings_reject_unknown_keys_by_name():
    with pytest.raises(engine.EngineError, match=r"engine\.max_los: unknown key"):
        engine_state.engine_settings({"max_los": 1})
    with pytest.raises(engine.EngineError, match=r"engine\.max_live: expected an integer"):
        engine_state.engine_settings({"max_live": 0})
    with pytest.raises(engine.EngineError, match=r"engine\.instruments\.binance:AAA\.tick_e8"):
        engine_state.engine_settings({"instruments": {"binance:AAA": {"tick_e8": 0}}})


@pytest.mark.parametrize("symbol, assets", [
    ("NKNUSDT", ("NKN", "USDT")), ("LRCBTC", ("LRC", "BTC")), ("RUNEEUR", ("RUNE", "EUR")),
    ("BTC-USD", ("BTC", "USD")), ("XBT/USD", ("BTC", "USD")), ("btcusd", ("BTC", "USD")),
    ("tBTCUSD", ("BTC", "USD")), ("tDOGE:USD", ("DOGE", "USD")), ("AAA", None), ("USD", None)])
def test_split_symbol_names_base_and_quote_assets_of_every_venue_style(symbol, assets):
    assert engine_state.split_symbol(symbol) == assets


def test_balances_seed_the_ledger_and_the_balance_check_denies_what_they_cannot_cover(cal):
    venue = {**engine_state.DEFAULT_RISK_VENUE, "check_balance": True}
    settings = {"instruments": {"binance:AAA": {**GRID["instruments"]["binance:AAA"],
                                                "base": "aaa", "quote": "usd"}},
                "balances": {"binance:USD": 15.0}}
    es, oh, od, words = _engine(cal, settings, risk_top={"venues": {"binance": venue}})
    assert es.instrument_assets["binance:AAA"] == ("AAA", "USD")
    _frame(es, oh, od, words, acks=False)
    o = _orders(oh, od)
    # 15.00 USD covers the ~10.00 bid; no AAA to sell: the ask is denied for its balance
    assert [x["side"] for _, x in o] == [records.SIDE_BUY]
    assert es.risk_dict()["denied"] == {"balance": 1}
    bid = o[0][1]
    bal = {b["asset"]: b for b in es.snapshot()["balances"]}
    assert bal["USD"]["balance_e8"] == 15 * 10**8
    assert bal["USD"]["reserved_e8"] == int(bid["price"]) * 10**6       # 1 lot at the bid
    _exec(es, words, records.RT_ACK, clord_id=bid["clord_id"], exec_type=records.EXEC_NEW,
          ord_status=records.EXEC_NEW, instrument=0, qty=1, leaves_qty=1)
    _fill(es, words, bid, int(bid["price"]), 1, 77, 1)
    bal = {b["asset"]: b for b in es.snapshot()["balances"]}
    assert bal["AAA"]["balance_e8"] == 10**8                              # bought 1 AAA
    assert bal["USD"]["balance_e8"] == 15 * 10**8 - int(bid["price"]) * 10**6
    assert bal["USD"]["reserved_e8"] == 0


def test_one_loss_limit_over_instruments_quoted_in_different_currencies_is_refused(cal):
    tables = [{"kind": "avellaneda_stoikov", "venue": "binance", "symbol": s}
              for s in ("NKNUSDT", "LRCBTC")]
    with pytest.raises(engine.EngineError, match=r"risk\.max_loss: .*BTC, USDT"):
        EngineState({"binance": ["NKNUSDT", "LRCBTC"]}, tables, None, cal=cal,
                    risk_table={**engine_state.default_risk_table(["binance"]), "max_loss": 100.0})
    # USD-pegged quotes share the limit; without money limits any mix is fine
    tables[1]["symbol"] = "NKNUSDC"
    EngineState({"binance": ["NKNUSDT", "NKNUSDC"]}, tables, None, cal=cal,
                risk_table={**engine_state.default_risk_table(["binance"]), "max_loss": 100.0})
    tables[1]["symbol"] = "LRCBTC"
    EngineState({"binance": ["NKNUSDT", "LRCBTC"]}, tables, None, cal=cal)


def test_engine_balances_are_validated_by_name():
    with pytest.raises(engine.EngineError, match=r"engine\.balances\.nowhere:USD: expected"):
        engine_state.engine_settings({"balances": {"nowhere:USD": 1.0}})
    with pytest.raises(engine.EngineError, match=r"engine\.balances\.binance:USD: expected an amount in"):
        engine_state.engine_settings({"balances": {"binance:USD": -1}})
    with pytest.raises(engine.EngineError, match=r"engine\.instruments\.binance:AAA\.quote"):
        engine_state.engine_settings({"instruments": {"binance:AAA": {"quote": 5}}})
    assert engine_state.engine_settings({"balances": {"binance:usdt": 2.5}})["balances"] == {
        ("binance", "USDT"): 250_000_000}


def test_engine_state_from_a_toml_config_with_both_strategy_kinds(cal):
    from appliance import config
    cfg = config.parse({
        "venues": [{"name": "binance"}, {"name": "kraken"}],
        "instruments": [*instruments_tables("binance", ["NKNUSDT"], "0.0000001", "0.00000001"),
                        *instruments_tables("binance", ["BLZETH"]),
                        *instruments_tables("kraken", ["XMR/USD"])],
        "engine": {"max_live": 10},
        "risk": {"limits": {"max_qty": 5, "max_notional": 100.0, "max_position": 5,
                            "max_open_orders": 4, "collar_bps": 50, "max_spread_ticks": 9}},
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
    assert es.oms.live.shape == (3, 10)
    assert int(es.led.instr[1]["tick_e8"]) == 10 and int(es.led.instr[0]["tick_e8"]) == 1
    assert int(es.rk.limits[2]["max_notional_e8"]) == 100 * 10**8
    with pytest.raises(Exception, match=r"strategies\[0\]\.venues: avellaneda_stoikov has one leg"):
        EngineState({"binance": ["NKNUSDT"]}, [{"kind": "avellaneda_stoikov",
                                                 "venues": ["binance"], "symbols": ["NKNUSDT"]}],
                    cal=cal)


@pytest.mark.timeout(600)    # compiling step cold takes about a minute on a small host
def test_step_polls_md_and_exec_rings_heartbeats_and_returns_to_python_when_idle(cal):
    from appliance.transport import wait
    es, oh, od, words = _engine(cal)
    mh, mdd = ring.local_ring(records.MD_RECORD_SIZE, 256)
    eh, ed = ring.local_ring(records.EXEC_RECORD_SIZE, 256)
    mc, ec = ring.local_cursor(mh), ring.local_cursor(eh)
    for r in book_frame(((990, 5),), ((1010, 5),), 55):
        ring.publish(mh, mdd, r)
    wp, ws = wait.make("backoff", None, 10, 1_000, 100_000), wait.new_state()
    loop = es.loop([(mh, mdd, mc)], [(eh, ed, ec)], wp, ws)
    args = (loop, es.books, es.strats, es.gate, es.tel, es.io, 0)
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
    fill[0]["venue"], fill[0]["cum_qty"] = B, 1
    ring.publish(eh, ed, fill.view(np.uint8).reshape(-1))
    engine.step(*args, 10**12)
    assert es.stats[engine.ST_FILLS] == 1 and es.pnl[0, 0, engine.PNL_POS] == 1
    control.request_kill(words, control.SOURCE_CLI, 1)
    assert engine.step(*args, 10**12) == engine.STEP_KILL_SEEN
    assert _orders(oh, od)[-1][0] == records.RT_CANCEL


def test_step_records_the_ring_hop_and_the_decision_of_each_order_into_its_hop_rows(cal):
    """md_ring_hop (md record published -> read by step) for every md record, md_to_order
    (read -> the order it triggered published) for every order an md record triggered, in the
    rows the actor maps (here rows 3 and 1 of a telemetry-like array); an exec record's orders
    are not md_to_order samples."""
    from appliance.transport import hist, wait
    es, oh, od, words = _engine(cal)
    rows = np.zeros((4, hist.ROW), np.int64)
    es.set_hop_rows(rows, [3, 1])
    with pytest.raises(ValueError):
        es.set_hop_rows(rows, [3, 4])
    mh, mdd = ring.local_ring(records.MD_RECORD_SIZE, 256)
    eh, ed = ring.local_ring(records.EXEC_RECORD_SIZE, 256)
    frame = book_frame(((990, 5),), ((1010, 5),), 55)
    for r in frame:
        ring.publish(mh, mdd, r)
    loop = es.loop([(mh, mdd, ring.local_cursor(mh))], [(eh, ed, ring.local_cursor(eh))],
                   wait.make("spin"), wait.new_state())
    engine.step(loop, es.books, es.strats, es.gate, es.tel, es.io, 0, 50)
    assert len(_orders(oh, od)) == 2
    assert rows[3, hist.H_COUNT] == len(frame)                     # md_ring_hop per md record
    assert rows[1, hist.H_COUNT] == 2                              # md_to_order per order
    assert rows[0, hist.H_COUNT] == rows[2, hist.H_COUNT] == 0
    assert 0 < hist.percentiles(rows[1], (0.5,))[0.5] < 10**9
    assert es.stats[engine.ST_MD_IN] == 0                          # only inside handle_md


# ------------------------------------------------------------------ the integrated risk gate

def test_order_over_max_notional_is_refused_by_the_engine_and_counted_under_its_reason():
    # quotes around 10.00 quote (1000 ticks of 0.01) x 1 lot: over a 5.00 notional limit
    es, oh, od, words = _engine(clock.calibration(), GRID, risk_limits={"max_notional": 5.0})
    _frame(es, oh, od, words)
    assert _orders(oh, od) == []
    assert es.rk.denials[risk.RJ_MAX_NOTIONAL] == 2 and es.stats[engine.ST_RISK_REJECTS] == 2
    assert es.risk_dict()["denied"] == {"max_notional": 2}
    # the same quotes under a 20.00 limit pass
    es, oh, od, words = _engine(clock.calibration(), GRID, risk_limits={"max_notional": 20.0})
    _frame(es, oh, od, words)
    assert [t for t, _ in _orders(oh, od)] == [records.RT_NEW_ORDER] * 2
    assert es.rk.denials[risk.RJ_MAX_NOTIONAL] == 0 and es.rk.denials[risk.RJ_OK] == 2


def _fill(es, words, order, price, qty, exec_id, cum):
    return _exec(es, words, records.RT_FILL, clord_id=order["clord_id"], last_price=price,
                 last_qty=qty, cum_qty=cum, leaves_qty=int(order["qty"]) - cum,
                 side=order["side"], exec_id=exec_id)


def test_losing_streak_moves_the_engine_to_reducing_and_only_reducing_orders_pass():
    es, oh, od, words = _engine(clock.calibration(), GRID, params={"qty": 3},
                                risk_top={"loss_streak_reduce": 2})
    _frame(es, oh, od, words)
    (_, bid), (_, ask) = _orders(oh, od)
    assert bid["qty"] == 3 and ask["qty"] == 3
    # two losing round trips: buy 1 @ 1000, sell 1 @ 990, twice
    _fill(es, words, bid, 1000, 1, 1, 1)
    _fill(es, words, ask, 990, 1, 2, 1)
    assert words[control.RISK_STATE_OFF // 8] == records.RISK_RUNNING
    _fill(es, words, bid, 1000, 1, 3, 2)
    _fill(es, words, ask, 990, 1, 4, 2)
    assert es.led.acct[positions.A_LOSS_STREAK] == 2
    assert es.rk.state[risk.R_STATE] == records.RISK_REDUCING
    assert words[control.RISK_STATE_OFF // 8] == records.RISK_REDUCING    # `appliance status`
    _fill(es, words, bid, 1000, 1, 5, 3)            # the bid fills up: long 1 lot
    assert es.led.pos[0]["qty"] == 1
    n = len(_orders(oh, od))
    _frame(es, oh, od, words, bids=((1090, 5),), asks=((1110, 5),))
    new = _orders(oh, od)[n:]
    # a new bid would grow the position: refused; the ask moves, cut to the 1 lot to unwind
    assert es.rk.denials[risk.RJ_REDUCE_ONLY] >= 1
    assert [(t, r["side"]) for t, r in new] == [(records.RT_REPLACE, records.SIDE_SELL)]
    assert new[0][1]["orig_clord_id"] == ask["clord_id"]
    assert new[0][1]["qty"] == 2 + 1                  # FIX OrderQty = cum 2 + leaves 1


def test_max_loss_from_a_losing_fill_sets_the_kill_switch_and_cancels_everything():
    es, oh, od, words = _engine(clock.calibration(), GRID, risk_top={"max_loss": 0.5})
    _frame(es, oh, od, words)
    (_, bid), (_, ask) = _orders(oh, od)
    rc = _fill(es, words, bid, 1060, 1, 1, 1)      # bought at 10.60, marked at 10.00: -0.60
    assert rc == engine.STEP_MAX_LOSS
    assert control.kill_requested(words)
    assert words[control._OFF_KILL_SOURCE // 8] == control.SOURCE_MAX_LOSS
    es.feed(stack([rec(records.RT_TRADE, B, 0, 1, price=1, qty=1, side=1)]))
    assert words[control.KILL_ACK_OFF // 8] == control.kill_epoch(words)
    o = _orders(oh, od)[2:]
    assert [(t, r["orig_clord_id"]) for t, r in o] == [(records.RT_CANCEL, ask["clord_id"])]
    assert es.risk_dict()["state"] == "HALTED" and es.risk_dict()["cause"] == "max_loss"


def test_requests_never_answered_pause_the_gate_after_the_ack_timeout(cal):
    es, oh, od, words = _engine(cal, settings={"ack_timeout_ms": 50})
    _frame(es, oh, od, words, acks=False)            # two NEWs the venue never answers
    assert es.open_orders() == 2
    timeout = int(es.loop_settings[engine.LP_ACK_TIMEOUT_NS])
    assert timeout == 50_000_000
    sent = int(es.oms.orders["created_ns"][es.oms.orders["state"] > 0].max())
    scan = lambda now: engine.check_stuck(es.gate, es.tel, es.io, now, timeout)
    assert scan(sent + timeout) == 0                 # at the limit: not yet
    assert es.risk_dict()["state"] == "RUNNING"
    assert scan(sent + timeout + 1) == 2
    assert es.risk_dict()["state"] == "PAUSED" and es.risk_dict()["cause"] == "ack_timeout"
    assert words[control.RISK_STATE_OFF // 8] == records.RISK_PAUSED
    assert es.stats_dict()["stuck_requests"] == 2
    # paused: the next frame sends nothing new
    before = len(_orders(oh, od))
    _frame(es, oh, od, words, bids=((980, 5),), asks=((1000, 5),), acks=False)
    assert len(_orders(oh, od)) == before
    # the venue answers: nothing is stuck any more (the breaker waits for its reset rule)
    for clord in es.oms.orders["clord_id"][es.oms.orders["state"] == 1]:
        _exec(es, words, records.RT_ACK, clord_id=clord, exec_type=records.EXEC_NEW,
              ord_status=records.EXEC_NEW, instrument=0, qty=1, leaves_qty=1)
    assert scan(sent + 10 * timeout) == 0 and es.stats_dict()["stuck_requests"] == 0


def test_no_order_goes_to_a_session_until_its_gateway_says_reconciled():
    es, oh, od, words = _engine(cal=clock.calibration())
    es.stats[engine.ST_SESS_READY:engine.ST_SESS_READY + engine.MAX_SESSIONS] = 0   # as run() does
    _frame(es, oh, od, words)
    assert _orders(oh, od) == []
    for state, expect_orders in ((records.SESSION_UP, False), (records.SESSION_RECONCILED, True)):
        _exec(es, words, records.RT_SESSION, session=0, state=state)
        _frame(es, oh, od, words, bids=((991, 5),), asks=((1011, 5),))
        assert bool(_orders(oh, od)) == expect_orders

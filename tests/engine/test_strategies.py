"""Strategies on plain arrays (unit behaviour) and on real recorded sessions (through the engine)."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.engine import book
from appliance.transport import records, ring
from appliance.engine.kernels import ST_NEW, ST_REPLACE, ST_RISK_REJECTS
from appliance.engine.state import EngineState
from appliance.engine.strategies import avellaneda_stoikov as AS
from appliance.engine.strategies import base, cross_venue as XV
from appliance.engine import strategies
from benches import instant_venue
from tests.engine import mdsource

VENUES = {"binance": ["NKNUSDT", "BLZETH"], "kraken": ["XMR/USD"], "sim": ["XMR/USD"]}


def _one(kind, params, venue="binance", symbol="NKNUSDT"):
    if kind == "cross_venue":
        t = {"kind": kind, "venues": ["kraken", "sim"], "symbols": ["XMR/USD", "XMR/USD"],
             "params": params}
    else:
        t = {"kind": kind, "venue": venue, "symbol": symbol, "params": params}
    return EngineState(VENUES, [t], cal=_CAL, clord_base=1)


_CAL = None


@pytest.fixture(autouse=True, scope="module")
def _cal():
    global _CAL
    from appliance.transport import clock
    _CAL = clock.calibration()


def _set_book(es, b, bids, asks):
    book.clear(es.px, es.qty, es.n, b)
    for p, q in bids:
        book.update(es.px, es.qty, es.n, b, 0, p, q)
    for p, q in asks:
        book.update(es.px, es.qty, es.n, b, 1, p, q)


def _as_book(es, i=0, now=10**12, bids=((99, 10), (98, 10)), asks=((101, 10), (102, 10))):
    _set_book(es, 0, bids, asks)
    return strategies.on_book(i, es.strats, es.books, 0, now, now)


def test_as_quotes_nothing_during_warmup_then_quotes_both_sides_passively():
    es = _one("avellaneda_stoikov", {"warmup_events": 3})
    for _ in range(3):
        _as_book(es)
        assert (es.quotes[0, :, base.Q_STATE] == base.QS_OFF).all()
    assert _as_book(es) == base.CHANGED
    q = es.quotes[0]
    assert q[0, base.Q_STATE] == base.QS_QUOTE and q[0, base.Q_SIDE] == records.SIDE_BUY
    assert q[1, base.Q_STATE] == base.QS_QUOTE and q[1, base.Q_SIDE] == records.SIDE_SELL
    assert q[0, base.Q_PRICE] <= 100 < q[1, base.Q_PRICE]        # passive, never crossing
    assert q[0, base.Q_FLAGS] & records.F_POST_ONLY


def test_as_long_inventory_skews_both_quotes_down():
    flat = _one("avellaneda_stoikov", {"warmup_events": 0, "gamma": 0.5, "horizon_events": 50,
                                       "min_half_spread": 1})
    long_ = _one("avellaneda_stoikov", {"warmup_events": 0, "gamma": 0.5, "horizon_events": 50,
                                        "min_half_spread": 1})
    wide = dict(bids=((900, 10), (899, 10)), asks=((1100, 10), (1101, 10)))
    for es in (flat, long_):                  # same volatility history for both
        for k in range(30):
            _as_book(es, bids=((900 + k % 3, 10),), asks=((1100 + k % 3, 10),))
    strategies.on_fill(0, long_.strats, 0, records.SIDE_BUY, 1000, 5, 0)
    _as_book(flat, **wide)
    _as_book(long_, **wide)
    assert long_.state[0, AS.S_INV] == 5
    assert long_.quotes[0, 0, base.Q_PRICE] < flat.quotes[0, 0, base.Q_PRICE]
    assert long_.quotes[0, 1, base.Q_PRICE] < flat.quotes[0, 1, base.Q_PRICE]


def test_as_max_inventory_stops_quoting_the_side_that_adds_to_it():
    es = _one("avellaneda_stoikov", {"warmup_events": 0, "max_inventory": 3, "qty": 1})
    strategies.on_fill(0, es.strats, 0, records.SIDE_BUY, 100, 3, 0)
    _as_book(es)
    assert es.quotes[0, 0, base.Q_STATE] == base.QS_OFF       # no more bids
    assert es.quotes[0, 1, base.Q_STATE] == base.QS_QUOTE


def test_as_one_sided_toxic_flow_pulls_quotes_until_cooldown_ends():
    es = _one("avellaneda_stoikov", {"warmup_events": 0, "vpin_bucket": 10, "vpin_alpha": 0.5,
                                     "tox_pull": 0.7, "cooldown_ms": 1})
    cool = es.params[0, AS.P_COOLDOWN_TSC]
    assert cool > 0
    now = 10**12
    _as_book(es, now=now)
    assert es.quotes[0, 0, base.Q_STATE] == base.QS_QUOTE
    rc = base.UNCHANGED
    for _ in range(4):       # buckets of pure buying: vpin 0.5, 0.75 -> pull
        rc = strategies.on_trade(0, es.strats, es.books, 0, 101, 10, records.SIDE_BUY, now, now)
        if rc == base.CHANGED:
            break
    assert rc == base.CHANGED and es.state[0, AS.S_PULLS] == 1
    assert (es.quotes[0, :2, base.Q_STATE] == base.QS_OFF).all()
    _as_book(es, now=now + 1)                       # still cooling down
    assert (es.quotes[0, :2, base.Q_STATE] == base.QS_OFF).all()
    # balanced flow brings vpin down; after the cooldown it quotes again (wider than before)
    for _ in range(6):
        for side in (records.SIDE_BUY, records.SIDE_SELL):
            strategies.on_trade(0, es.strats, es.books, 0, 100, 5, side, now, now)
    assert es.state[0, AS.S_VPIN] < 0.7
    _as_book(es, now=now + int(cool) + 1)
    assert es.quotes[0, 0, base.Q_STATE] == base.QS_QUOTE


def test_as_requote_threshold_keeps_the_resting_price_for_small_moves():
    es = _one("avellaneda_stoikov", {"warmup_events": 0, "requote_ticks": 5, "vol_widen": 0,
                                     "horizon_events": 0})
    bids, asks = ((990, 10),), ((1010, 10),)
    _as_book(es, bids=bids, asks=asks)
    p0 = es.quotes[0, 0, base.Q_PRICE]
    assert _as_book(es, bids=((991, 10),), asks=((1011, 10),)) == base.UNCHANGED
    assert es.quotes[0, 0, base.Q_PRICE] == p0
    _as_book(es, bids=((1000, 10),), asks=((1020, 10),))
    assert es.quotes[0, 0, base.Q_PRICE] >= p0 + 5


def test_as_crossed_book_pulls_quotes():
    es = _one("avellaneda_stoikov", {"warmup_events": 0})
    _as_book(es)
    assert _as_book(es, bids=((101, 1),), asks=((100, 1),)) == base.CHANGED
    assert (es.quotes[0, :2, base.Q_STATE] == base.QS_OFF).all()


def _xv(params, a, b):
    es = _one("cross_venue", params)
    _set_book(es, 0, *a)
    _set_book(es, 1, *b)
    rc = strategies.on_book(0, es.strats, es.books, 1, 10**12, 10**12)
    return es, rc


def test_cross_venue_takes_both_legs_when_edge_beats_fees_and_margin():
    # A ask 1000, B bid 1010: edge 10 - fees (1000 + 1010) * 10bps = 10 - 2.01 > margin 5
    es, rc = _xv({"fee_a_bps": 10, "fee_b_bps": 10, "margin": 5, "qty_a": 2, "qty_b": 2},
                 (((990, 5),), ((1000, 5),)), (((1010, 5),), ((1020, 5),)))
    assert rc == base.CHANGED
    q = es.quotes[0]
    assert list(q[0, [base.Q_STATE, base.Q_LEG, base.Q_SIDE, base.Q_PRICE, base.Q_QTY, base.Q_TIF]]) \
        == [base.QS_TAKE, 0, records.SIDE_BUY, 1000, 2, records.TIF_IOC]
    assert list(q[1, [base.Q_STATE, base.Q_LEG, base.Q_SIDE, base.Q_PRICE, base.Q_QTY, base.Q_TIF]]) \
        == [base.QS_TAKE, 1, records.SIDE_SELL, 1010, 2, records.TIF_IOC]


def test_cross_venue_does_not_take_when_fees_eat_the_edge():
    # edge 10 - fees (1000 + 1010) * 50bps = 10 - 10.05 < 0
    es, rc = _xv({"fee_a_bps": 50, "fee_b_bps": 50, "margin": 0},
                 (((990, 5),), ((1000, 5),)), (((1010, 5),), ((1020, 5),)))
    assert rc == base.UNCHANGED and es.state[0, XV.S_TAKES] == 0


def test_cross_venue_takes_the_other_direction_with_price_multipliers():
    # A in 0.01 units (mult 1), B in 0.1 units (mult 10): A bid 10100 > B ask 1000 * 10 = 10000
    es, rc = _xv({"mult_a": 1, "mult_b": 10, "fee_a_bps": 0, "fee_b_bps": 0, "margin": 50},
                 (((10100, 5),), ((10110, 5),)), (((990, 5),), ((1000, 5),)))
    assert rc == base.CHANGED
    assert es.quotes[0, 0, base.Q_SIDE] == records.SIDE_SELL and es.quotes[0, 0, base.Q_PRICE] == 10100
    assert es.quotes[0, 1, base.Q_SIDE] == records.SIDE_BUY and es.quotes[0, 1, base.Q_PRICE] == 1000


def test_cross_venue_needs_the_quantity_on_both_touches():
    es, rc = _xv({"fee_a_bps": 0, "fee_b_bps": 0, "qty_a": 10, "qty_b": 10},
                 (((990, 5),), ((1000, 5),)), (((1010, 50),), ((1020, 5),)))
    assert rc == base.UNCHANGED


def test_unknown_strategy_parameter_is_rejected_by_name():
    with pytest.raises(base.StrategyConfigError, match=r"params\.gama: unknown parameter"):
        _one("avellaneda_stoikov", {"gama": 0.1})
    with pytest.raises(base.StrategyConfigError, match=r"strategies\[0\]\.kind"):
        EngineState(VENUES, [{"kind": "nope", "venue": "binance", "symbol": "NKNUSDT"}], cal=_CAL)
    with pytest.raises(base.StrategyConfigError, match="symbol 'BTCUSDT' is not in"):
        _one("avellaneda_stoikov", {}, symbol="BTCUSDT")


# ------------------------------------------------------------------------ real recorded sessions

def _replay(es, recs):
    oh, od = ring.local_ring(records.ORDER_RECORD_SIZE, 1 << 16)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    es.attach(oh, od, words)
    instant_venue.feed(es, recs)
    return mdsource.order_records(oh, od)


def test_avellaneda_stoikov_on_recorded_binance_session_quotes_inside_the_real_book():
    recs, syms = mdsource.recorded("binance")
    venues = {"binance": list(syms)}
    # price_unit ~ the instrument's typical touch spread in ticks (the recording's tick sizes
    # range from 1e-8 USDT on NKNUSDT to whole ticks on LRCBTC)
    unit = {"NKNUSDT": 10000, "BLZETH": 5, "LRCBTC": 1, "RUNEEUR": 100000}
    tables = [{"kind": "avellaneda_stoikov", "venue": "binance", "symbol": s,
               "params": {"warmup_events": 1, "requote_ticks": unit[s], "price_unit": unit[s]}}
              for s in syms]
    es = EngineState(venues, tables, None, cal=_CAL, clord_base=1)   # default risk table
    orders = _replay(es, recs)
    # the three instruments with a synced book and several frames get a bid and an ask (RUNEEUR
    # has too few consistent frames in this 31 s recording)
    quoted = [i for i in range(len(syms)) if es.state[i, AS.S_QUOTES] > 0]
    assert len(quoted) == len(syms) and es.stats[ST_NEW] >= 2 * len(syms)
    assert es.stats[ST_RISK_REJECTS] == 0
    assert es.stats[ST_REPLACE] > 0
    sent = set()
    for o in orders:
        assert o[8] in (records.RT_NEW_ORDER, records.RT_REPLACE, records.RT_CANCEL)
        r = o.view(records.RECORD_DTYPES[int(o[8])])[0]
        assert r["venue"] == records.VENUE_BINANCE and r["origin_tsc"] > 0
        if o[8] == records.RT_CANCEL:            # quotes pulled (book one-sided / crossed)
            assert int(r["orig_clord_id"]) in sent
        else:
            assert r["price"] > 0 and r["qty"] == 1
        sent.add(int(r["clord_id"]))
    # the final quotes are passive against the final real book of each instrument
    for i in range(len(syms)):
        b = es.meta[i, base.M_BOOK]
        bb = book.best(es.px, es.qty, es.n, b, 0)[0]
        ba = book.best(es.px, es.qty, es.n, b, 1)[0]
        q = es.quotes[i]
        if q[0, base.Q_STATE] == base.QS_QUOTE:
            assert q[0, base.Q_PRICE] < ba
        if q[1, base.Q_STATE] == base.QS_QUOTE:
            assert q[1, base.Q_PRICE] > bb


def _relabel(recs, venue, shift):
    out = recs.copy()
    out[:, 9] = venue
    for k in range(out.shape[0]):
        rt = out[k, 8]
        if rt in (records.RT_L2_UPDATE, records.RT_TRADE):
            v = out[k].view(records.L2_UPDATE)[0]
            v["price"] += shift
    return out


@pytest.mark.parametrize("shift", [0, 400])
def test_cross_venue_on_recorded_kraken_book_takes_only_real_edges(shift):
    """Leg A: Kraken XMR/USD as recorded; leg B: the same recorded book re-published as a second
    venue, its prices shifted by ``shift`` ticks. With no shift the legs never cross (no take);
    with a shift wider than the spread plus fees every take is a real edge at both touches."""
    recs, syms = mdsource.recorded("kraken")
    idx = syms.index("XMR/USD")
    mine = recs[recs[:, 12:16].copy().view("<u4").reshape(-1) == idx]
    other = _relabel(mine, records.VENUE_SIM, shift)
    merged = np.empty((2 * len(mine), 64), np.uint8)
    merged[0::2] = mine
    merged[1::2] = other
    venues = {"kraken": list(syms), "sim": [None] * idx + ["XMR/USD"]}
    es = EngineState(venues, [{"kind": "cross_venue", "venues": ["kraken", "sim"],
                               "symbols": ["XMR/USD", "XMR/USD"],
                               "params": {"fee_a_bps": 10, "fee_b_bps": 10, "margin": 1,
                                          "cooldown_ms": 0}}], cal=_CAL, clord_base=1)
    orders = _replay(es, merged)
    if shift == 0:
        assert orders == [] and es.state[0, XV.S_TAKES] == 0
        assert es.state[0, XV.S_EVALS] > 100
        return
    assert es.state[0, XV.S_TAKES] > 0
    assert len(orders) == 2 * es.state[0, XV.S_TAKES]
    for a, b in zip(orders[0::2], orders[1::2]):
        ra, rb = a.view(records.NEW_ORDER)[0], b.view(records.NEW_ORDER)[0]
        assert ra["tif"] == rb["tif"] == records.TIF_IOC
        assert ra["venue"] == records.VENUE_KRAKEN and rb["venue"] == records.VENUE_SIM
        assert ra["side"] == records.SIDE_BUY and rb["side"] == records.SIDE_SELL
        edge = rb["price"] - ra["price"] - (ra["price"] + rb["price"]) * 10e-4
        assert edge > 1

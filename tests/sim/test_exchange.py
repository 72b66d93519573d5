"""Mock exchange: matching-venue replies per order message, and the acceptor over loopback TCP."""
from __future__ import annotations

import socket
import time
from decimal import Decimal

import pytest
import simplefix

from appliance.sim import exchange as X
from appliance.fix import wire


def order_msg(mt: str, **f) -> wire.Message:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4")
    m.append_pair(35, mt)
    m.append_pair(49, "APPLIANCE")
    m.append_pair(56, "SIMEX")
    m.append_pair(34, 1)
    m.append_pair(52, "20260101-00:00:00.000")
    tags = {"orig": 41, "clord": 11, "sym": 55, "side": 54, "qty": 38, "ord_type": 40, "px": 44,
            "tif": 59, "scope": 530}
    for k, v in f.items():
        m.append_pair(tags[k], v)
    return wire.parse(m.encode())


def nos(clord, px="100.00", side="1", qty="2", tif="1", ord_type="2", sym="BTCUSDT"):
    f = dict(clord=clord, sym=sym, side=side, qty=qty, ord_type=ord_type, tif=tif)
    if px is not None:
        f["px"] = px
    return order_msg("D", **f)


def fields(reply) -> dict:
    mt, body = reply
    d = dict(body)
    d[35] = mt
    return d


def test_new_order_below_reference_is_acked_and_rests():
    v = X.MatchingVenue(references={"BTCUSDT": "101"})
    out = [fields(r) for r in v.handle(nos(b"1", px="100.00"))]
    assert len(out) == 1
    assert out[0][35] == b"8" and out[0][150] == b"0" and out[0][39] == b"0"
    assert out[0][151] == b"2" and out[0][14] == b"0" and out[0][44] == b"100.00"


def test_crossing_buy_fills_at_reference_as_taker():
    v = X.MatchingVenue(references={"BTCUSDT": "99.5"})
    ack, fill = [fields(r) for r in v.handle(nos(b"1", px="100.00"))]
    assert ack[150] == b"0"
    assert fill[150] == b"F" and fill[39] == b"2" and fill[31] == b"99.5" and fill[32] == b"2"
    assert fill[151] == b"0" and fill[14] == b"2" and fill[851] == b"2"


def test_sell_crosses_when_at_or_below_reference():
    v = X.MatchingVenue(references={"BTCUSDT": "100"})
    assert [fields(r)[150] for r in v.handle(nos(b"1", px="100", side="2"))] == [b"0", b"F"]
    assert [fields(r)[150] for r in v.handle(nos(b"2", px="100.01", side="2"))] == [b"0"]


def test_ioc_that_does_not_cross_is_cancelled_after_ack():
    v = X.MatchingVenue(references={"BTCUSDT": "200"})
    out = [fields(r) for r in v.handle(nos(b"1", px="100", tif="3"))]
    assert [(o[150], o[39]) for o in out] == [(b"0", b"0"), (b"4", b"4")]


def test_duplicate_clordid_is_rejected_with_reason():
    v = X.MatchingVenue()
    v.handle(nos(b"1"))
    (rej,) = [fields(r) for r in v.handle(nos(b"1"))]
    assert rej[150] == b"8" and rej[39] == b"8" and rej[103] == b"6"


def test_market_order_without_reference_is_rejected():
    v = X.MatchingVenue()
    (rej,) = [fields(r) for r in v.handle(nos(b"1", px=None, ord_type="1"))]
    assert rej[150] == b"8" and b"no market" in rej[58]


def test_malformed_quantity_is_rejected_not_raised():
    v = X.MatchingVenue()
    (rej,) = [fields(r) for r in v.handle(nos(b"1", qty="abc"))]
    assert rej[150] == b"8" and b"OrderQty" in rej[58]


def test_cancel_of_working_order_is_acked_and_unknown_gets_cancel_reject():
    v = X.MatchingVenue()
    v.handle(nos(b"1"))
    (ok,) = [fields(r) for r in v.handle(order_msg("F", orig=b"1", clord=b"2", sym="BTCUSDT", side="1", qty="2"))]
    assert ok[150] == b"4" and ok[39] == b"4" and ok[11] == b"2" and ok[41] == b"1"
    (again,) = [fields(r) for r in v.handle(order_msg("F", orig=b"1", clord=b"3", sym="BTCUSDT", side="1", qty="2"))]
    assert again[35] == b"9" and again[434] == b"1" and again[39] == b"4"
    (unknown,) = [fields(r) for r in v.handle(order_msg("F", orig=b"77", clord=b"4", sym="BTCUSDT", side="1", qty="2"))]
    assert unknown[35] == b"9" and unknown[102] == b"1" and unknown[39] == b"8"


def test_replace_moves_order_to_new_id_and_fills_when_it_now_crosses():
    v = X.MatchingVenue(references={"BTCUSDT": "105"})
    v.handle(nos(b"1", px="100"))
    out = [fields(r) for r in v.handle(order_msg("G", orig=b"1", clord=b"2", sym="BTCUSDT", side="1",
                                                  qty="3", ord_type="2", px="106", tif="1"))]
    assert [(o[150], o[11]) for o in out] == [(b"5", b"2"), (b"F", b"2")]
    assert out[0][41] == b"1" and out[0][38] == b"3" and out[1][32] == b"3"
    (rej,) = [fields(r) for r in v.handle(order_msg("G", orig=b"1", clord=b"3", sym="BTCUSDT", side="1",
                                                     qty="3", ord_type="2", px="90", tif="1"))]
    assert rej[35] == b"9" and rej[434] == b"2"


def test_mass_cancel_cancels_working_orders_of_symbol_and_reports_count():
    v = X.MatchingVenue()
    v.handle(nos(b"1"))
    v.handle(nos(b"2", sym="ETHUSDT"))
    v.handle(nos(b"3"))
    out = [fields(r) for r in v.handle(order_msg("q", clord=b"9", scope=1, sym="BTCUSDT"))]
    assert [o[35] for o in out] == [b"8", b"8", b"r"]
    assert {o[11] for o in out[:2]} == {b"1", b"3"} and out[2][533] == b"2"
    out = [fields(r) for r in v.handle(order_msg("q", clord=b"10", scope=7))]
    assert [o[11] for o in out[:-1]] == [b"2"] and out[-1][533] == b"1"


def test_status_request_reports_current_state_or_unknown():
    v = X.MatchingVenue()
    v.handle(nos(b"1"))
    (st,) = [fields(r) for r in v.handle(order_msg("H", clord=b"1", sym="BTCUSDT", side="1"))]
    assert st[150] == b"I" and st[39] == b"0" and st[151] == b"2"
    (unk,) = [fields(r) for r in v.handle(order_msg("H", clord=b"5", sym="BTCUSDT", side="1"))]
    assert unk[150] == b"I" and unk[39] == b"8" and unk[58] == b"unknown order"


def test_new_reference_fills_resting_orders_it_crosses_as_maker():
    v = X.MatchingVenue(references={"BTCUSDT": "110"})
    v.handle(nos(b"1", px="100"))
    v.handle(nos(b"2", px="95"))
    fills = v.set_reference("BTCUSDT", Decimal("99"))
    assert len(fills) == 1
    owner, (mt, body) = fills[0]
    f = dict(body)
    assert f[11] == b"1" and f[150] == b"F" and f[31] == b"99" and f[851] == b"1"


def test_reference_argument_parsing_names_bad_input():
    assert X.parse_refs(["BTCUSDT=100.5"]) == {"BTCUSDT": Decimal("100.5")}
    with pytest.raises(Exception, match="SYMBOL=PRICE"):
        X.parse_refs(["BTCUSDT"])
    with pytest.raises(Exception, match="not a decimal"):
        X.parse_refs(["BTCUSDT=abc"])


# ---- over TCP -----------------------------------------------------------------------------------
def _frame(mt, seq, *pairs):
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4")
    m.append_pair(35, mt)
    m.append_pair(34, seq)
    m.append_pair(49, "APPLIANCE")
    m.append_utc_timestamp(52, precision=3)
    m.append_pair(56, "SIMEX")
    for t, v in pairs:
        m.append_pair(t, v)
    return m.encode()


def _read_until(sock, parser, pred, timeout=10.0):
    deadline = time.time() + timeout
    got = []
    while time.time() < deadline:
        m = parser.get_message()
        if m is not None:
            got.append(m)
            if pred(m):
                return got
            continue
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        parser.append_buffer(data)
    raise AssertionError(f"expected message not received; got {[str(x) for x in got]}")


def test_exchange_acks_and_fills_an_order_over_loopback_with_dictionary_validation():
    srv = X.ExchangeServer([("FIX.4.4", "SIMEX", "APPLIANCE")],
                           venue=X.MatchingVenue(references={"BTCUSDT": "100"})).start()
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        p = simplefix.FixParser()
        s.sendall(_frame("A", 1, (98, 0), (108, 30)))
        _read_until(s, p, lambda m: m.get(35) == b"A")
        s.sendall(_frame("D", 2, (11, "42"), (55, "BTCUSDT"), (54, 1), (60, "20260101-00:00:00.000"),
                         (38, "1.5"), (40, 2), (44, "101.25"), (59, 1)))
        got = _read_until(s, p, lambda m: m.get(150) == b"F")
        ers = [m for m in got if m.get(35) == b"8"]
        assert [m.get(150) for m in ers] == [b"0", b"F"]
        assert ers[1].get(31) == b"100" and ers[1].get(32) == b"1.5" and ers[1].get(11) == b"42"
        # an order the dictionary rejects (Side missing) gets a session Reject, not a crash
        s.sendall(_frame("D", 3, (11, "43"), (55, "BTCUSDT"), (60, "20260101-00:00:00.000"),
                         (38, "1"), (40, 2), (44, "1"), (59, 1)))
        got = _read_until(s, p, lambda m: m.get(35) in (b"3", b"j"))
        assert got[-1].get(371) == b"54" or got[-1].get(35) == b"j"
        s.close()
    finally:
        srv.stop()

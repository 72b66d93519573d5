"""Mock exchange (``appliance fix exchange``): FIX replies over the compiled exchange simulator,
FIX 4.2 and 4.4, reference markets, following an md ring, ids and sequence numbers across restarts."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal

import numpy as np
import pytest
import simplefix

from appliance.config.instruments import Instrument
from appliance.fix import wire
from appliance.sim import exchange as X
from appliance.transport import records as R
from appliance.transport import ring


class Owner:
    """A stand-in for the session an order came in on (only its version is read)."""

    def __init__(self, bs="FIX.4.4"):
        self.cfg = type("C", (), {"begin_string": bs})()
        self.logged_on = True


def order_msg(mt: str, bs="FIX.4.4", **f) -> wire.Message:
    m = simplefix.FixMessage()
    m.append_pair(8, bs)
    m.append_pair(35, mt)
    m.append_pair(49, "APPLIANCE")
    m.append_pair(56, "SIMEX")
    m.append_pair(34, 1)
    m.append_pair(52, "20260101-00:00:00.000")
    tags = {"orig": 41, "clord": 11, "sym": 55, "side": 54, "qty": 38, "ord_type": 40, "px": 44,
            "tif": 59, "scope": 530, "exec_inst": 18}
    for k, v in f.items():
        m.append_pair(tags[k], v)
    return wire.parse(m.encode())


def nos(clord, px="100.00", side="1", qty="2", tif="1", ord_type="2", sym="BTCUSDT", **kw):
    f = dict(clord=clord, sym=sym, side=side, qty=qty, ord_type=ord_type, tif=tif, **kw)
    if px is not None:
        f["px"] = px
    return order_msg("D", **f)


def fields(reply) -> dict:
    mt, body = reply
    d = dict(body)
    d[35] = mt
    return d


def as42(replies) -> list:
    """Replies as a FIX 4.2 session sends them (``ExchangeApplication`` applies ``for_version``
    to everything it sends; the venue renders FIX 4.4 bodies)."""
    return [(mt, X.for_version("FIX.4.2", mt, body)) for mt, body in replies]


def test_new_order_below_reference_is_acked_and_rests():
    v = X.MatchingVenue(references={"BTCUSDT": "101"})
    out = [fields(r) for r in v.handle(nos(b"1", px="100.00"))]
    assert len(out) == 1
    assert out[0][35] == b"8" and out[0][150] == b"0" and out[0][39] == b"0"
    assert out[0][151] == b"2" and out[0][14] == b"0" and out[0][44] == b"100"


def test_crossing_buy_fills_at_reference_as_taker():
    v = X.MatchingVenue(references={"BTCUSDT": "99.5"})
    ack, fill = [fields(r) for r in v.handle(nos(b"1", px="100.00"))]
    assert ack[150] == b"0"
    assert fill[150] == b"F" and fill[39] == b"2" and fill[31] == b"99.5" and fill[32] == b"2"
    assert fill[151] == b"0" and fill[14] == b"2" and fill[851] == b"2" and fill[6] == b"99.5"


def test_sell_crosses_when_at_or_below_reference():
    v = X.MatchingVenue(references={"BTCUSDT": "100"})
    assert [fields(r)[150] for r in v.handle(nos(b"1", px="100", side="2"))] == [b"0", b"F"]
    assert [fields(r)[150] for r in v.handle(nos(b"2", px="100.01", side="2"))] == [b"0"]


def test_ioc_that_does_not_cross_expires_after_ack():
    v = X.MatchingVenue(references={"BTCUSDT": "200"})
    out = [fields(r) for r in v.handle(nos(b"1", px="100", tif="3"))]
    assert [(o[150], o[39]) for o in out] == [(b"0", b"0"), (b"C", b"C")]
    assert out[1][151] == b"0"


def test_post_only_that_would_cross_is_rejected():
    v = X.MatchingVenue(references={"BTCUSDT": "100"})
    (rej,) = [fields(r) for r in v.handle(nos(b"1", px="100", exec_inst="6"))]
    assert rej[150] == b"8" and b"post-only" in rej[58]
    (ack,) = [fields(r) for r in v.handle(nos(b"2", px="99", exec_inst="6"))]
    assert ack[150] == b"0" and ack[18] == b"6"


def test_duplicate_clordid_is_rejected_with_reason():
    v = X.MatchingVenue()
    v.handle(nos(b"1"))
    (rej,) = [fields(r) for r in v.handle(nos(b"1"))]
    assert rej[150] == b"8" and rej[39] == b"8" and rej[103] == b"6"


def test_market_order_without_market_is_rejected():
    v = X.MatchingVenue()
    (rej,) = [fields(r) for r in v.handle(nos(b"1", px=None, ord_type="1"))]
    assert rej[150] == b"8" and b"no market" in rej[58] and rej[103] == b"2"


def test_malformed_or_off_grid_quantity_is_rejected_not_raised():
    v = X.MatchingVenue()
    (rej,) = [fields(r) for r in v.handle(nos(b"1", qty="abc"))]
    assert rej[150] == b"8" and b"OrderQty" in rej[58]
    v.add_instrument("ETHUSDT", tick="0.05", lot="0.01")
    (rej,) = [fields(r) for r in v.handle(nos(b"2", sym="ETHUSDT", px="100.01"))]
    assert rej[150] == b"8" and b"0.05 grid" in rej[58]
    (rej,) = [fields(r) for r in v.handle(nos(b"3", sym="ETHUSDT", px="100.05", qty="0.001"))]
    assert b"lot" in rej[58]


def test_cancel_of_working_order_then_too_late_then_unknown():
    v = X.MatchingVenue()
    v.handle(nos(b"1"))
    (ok,) = [fields(r) for r in v.handle(order_msg("F", orig=b"1", clord=b"2", sym="BTCUSDT", side="1", qty="2"))]
    assert ok[150] == b"4" and ok[39] == b"4" and ok[11] == b"2" and ok[41] == b"1" and ok[151] == b"0"
    (again,) = [fields(r) for r in v.handle(order_msg("F", orig=b"1", clord=b"3", sym="BTCUSDT", side="1", qty="2"))]
    assert again[35] == b"9" and again[434] == b"1" and again[39] == b"4" and again[102] == b"0"
    (unknown,) = [fields(r) for r in v.handle(order_msg("F", orig=b"77", clord=b"4", sym="BTCUSDT", side="1", qty="2"))]
    assert unknown[35] == b"9" and unknown[102] == b"1" and unknown[39] == b"8"


def test_replace_moves_order_to_new_id_and_fills_when_it_now_crosses():
    v = X.MatchingVenue(references={"BTCUSDT": "105"})
    v.handle(nos(b"1", px="100"))
    out = [fields(r) for r in v.handle(order_msg("G", orig=b"1", clord=b"2", sym="BTCUSDT", side="1",
                                                  qty="3", ord_type="2", px="106", tif="1"))]
    assert [(o[150], o[11]) for o in out] == [(b"5", b"2"), (b"F", b"2")]
    assert out[0][41] == b"1" and out[0][38] == b"3" and out[1][32] == b"3" and out[1][31] == b"105"
    (rej,) = [fields(r) for r in v.handle(order_msg("G", orig=b"1", clord=b"3", sym="BTCUSDT", side="1",
                                                     qty="3", ord_type="2", px="90", tif="1"))]
    assert rej[35] == b"9" and rej[434] == b"2"


def test_text_clordids_round_trip():
    v = X.MatchingVenue()
    (ack,) = [fields(r) for r in v.handle(nos(b"ORDER-A"))]
    assert ack[11] == b"ORDER-A"
    (c,) = [fields(r) for r in v.handle(order_msg("F", orig=b"ORDER-A", clord=b"CXL-A", sym="BTCUSDT",
                                                  side="1", qty="2"))]
    assert c[150] == b"4" and c[11] == b"CXL-A" and c[41] == b"ORDER-A"


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


def test_new_reference_fills_resting_orders_it_crosses_as_maker_at_their_price():
    v = X.MatchingVenue(references={"BTCUSDT": "110"})
    v.handle(nos(b"1", px="100"))
    v.handle(nos(b"2", px="95"))
    fills = v.set_reference("BTCUSDT", Decimal("99"))
    assert len(fills) == 1
    owner, (mt, body) = fills[0]
    f = dict(body)
    assert f[11] == b"1" and f[150] == b"F" and f[31] == b"100" and f[851] == b"1"


def test_fix42_reports_use_exec_trans_type_and_42_values():
    v = X.MatchingVenue(references={"BTCUSDT": "100"})
    o42 = Owner("FIX.4.2")
    v.session_index(o42)
    ack, fill = [fields(r) for r in as42(v.handle(nos(b"1", px="101", qty="2"), owner=o42))]
    assert ack[20] == b"0" and ack[150] == b"0" and ack[39] == b"0"
    assert fill[20] == b"0" and fill[150] == b"2" and fill[39] == b"2" and 851 not in fill
    assert fill[32] == b"2" and fill[31] == b"100"
    v.handle(nos(b"2", px="90", qty="2"), owner=o42)
    (st,) = [fields(r) for r in as42(v.handle(order_msg("H", clord=b"2", sym="BTCUSDT", side="1"), owner=o42))]
    assert st[20] == b"3" and st[150] == b"0" and st[39] == b"0"
    (dup,) = [fields(r) for r in as42(v.handle(nos(b"2", px="90"), owner=o42))]
    assert dup[103] == b"6"
    (post,) = [fields(r) for r in as42(v.handle(nos(b"3", px="100", exec_inst="6"), owner=o42))]
    assert int(post[103]) <= 8                      # 4.2 OrdRejReason has no 99
    v.handle(order_msg("F", orig=b"2", clord=b"4", sym="BTCUSDT", side="1", qty="2"), owner=o42)
    (late,) = [fields(r) for r in as42(v.handle(order_msg("G", orig=b"4", clord=b"5", sym="BTCUSDT",
                                                           side="1", qty="2", ord_type="2", px="91",
                                                           tif="1"), owner=o42))]
    assert late[35] == b"9" and int(late[102]) <= 3


def test_fix42_fill_messages_pass_the_42_dictionary():
    from appliance.fix import dictionary
    dd = dictionary.for_version("FIX.4.2")
    v = X.MatchingVenue(references={"BTCUSDT": "100"})
    o42 = Owner("FIX.4.2")
    for mt, body in as42(v.handle(nos(b"1", px="101", qty="2"), owner=o42)):
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.2")
        m.append_pair(35, mt)
        for h, val in ((49, "SIMEX"), (56, "APPLIANCE"), (34, 2), (52, "20260101-00:00:00.000")):
            m.append_pair(h, val)
        for t, val in dd.order_body(mt, body):
            m.append_pair(t, val)
        assert dd.validate(wire.parse(m.encode())) is None


def test_reference_argument_parsing_names_bad_input():
    assert X.parse_refs(["BTCUSDT=100.5"]) == {"BTCUSDT": Decimal("100.5")}
    with pytest.raises(Exception, match="SYMBOL=PRICE"):
        X.parse_refs(["BTCUSDT"])
    with pytest.raises(Exception, match="not a decimal"):
        X.parse_refs(["BTCUSDT=abc"])


# ---- over TCP -----------------------------------------------------------------------------------
def _frame(mt, seq, *pairs, bs="FIX.4.4"):
    m = simplefix.FixMessage()
    m.append_pair(8, bs)
    m.append_pair(35, mt)
    m.append_pair(34, seq)
    m.append_pair(49, "APPLIANCE")
    m.append_utc_timestamp(52, precision=3)
    m.append_pair(56, "SIMEX")
    for t, v in pairs:
        m.append_pair(t, v)
    return m.encode()


def _read_until(sock, parser, pred, timeout=20.0):
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


def _md_records(kind, n=1):
    return np.zeros(n, kind)


def test_exchange_follows_the_md_ring_and_fills_a_resting_bid_on_replayed_trades(shm_dir):
    """A real md ring in shared memory, the exchange attached as a reader, FIX over TCP."""
    w = ring.RingWriter.create("md.binance", R.MD_RECORD_SIZE, 1024, shm_dir)
    srv = None
    try:
        nkn = Instrument("binance", "NKNUSDT", 0, "0.00000001", "0.00000001", "NKN", "USDT", 0.0, 0.0)
        srv = X.ExchangeServer([("FIX.4.4", "SIMEX", "APPLIANCE", {"venue": "binance"})],
                               md_rings={"binance": "md.binance"}, shm_dir=shm_dir,
                               venue_instruments={"binance": [nkn]}).start()

        def publish(kind, **f):
            rec = np.zeros(1, kind)
            rec[0]["venue"] = R.VENUE_BINANCE
            rec[0]["instrument"] = 0
            for k, v in f.items():
                rec[0][k] = v
            w.publish(rec)

        for side, px, q in ((R.SIDE_BUY, 35_270_000, 960_200_000_000), (R.SIDE_SELL, 35_310_000, 15_200_000_000)):
            publish(R.L2_UPDATE, rtype=R.RT_L2_UPDATE, side=side, price=px, qty=q, flags=R.F_SNAPSHOT)
        publish(R.BATCH_END, rtype=R.RT_BATCH_END)
        publish(R.BOOK_STATUS, rtype=R.RT_BOOK_STATUS, status=R.BOOK_VALID)
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        p = simplefix.FixParser()
        s.sendall(_frame("A", 1, (98, 0), (108, 30)))
        _read_until(s, p, lambda m: m.get(35) == b"A")
        deadline = time.time() + 20
        while srv.venue.counts["md_records"] < 4 and time.time() < deadline:
            time.sleep(0.01)
        # 100 NKN at the best bid: 9602 NKN ahead of us
        s.sendall(_frame("D", 2, (11, "7"), (55, "NKNUSDT"), (54, 1), (60, "20260101-00:00:00.000"),
                         (38, "100"), (40, 2), (44, "0.3527"), (59, 1)))
        (ack,) = [m for m in _read_until(s, p, lambda m: m.get(35) == b"8")]
        assert ack.get(150) == b"0"
        # sellers hit the bid: 9602 + 40 NKN traded at 0.3527 -> 40 of ours fill
        publish(R.TRADE, rtype=R.RT_TRADE, price=35_270_000, qty=960_200_000_000, side=R.SIDE_SELL)
        publish(R.TRADE, rtype=R.RT_TRADE, price=35_270_000, qty=4_000_000_000, side=R.SIDE_SELL)
        got = _read_until(s, p, lambda m: m.get(150) == b"F")
        f = got[-1]
        assert f.get(11) == b"7" and f.get(32) == b"40" and f.get(31) == b"0.3527" and f.get(851) == b"1"
        assert f.get(39) == b"1" and f.get(151) == b"60"
        s.close()
    finally:
        if srv is not None:
            srv.stop()
            srv.close()
        w.close()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_cli_exchange_keeps_sequence_numbers_and_never_repeats_ids_across_restarts(tmp_path):
    port = _free_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""
[appliance]
state_dir = "{tmp_path}/state"
[fix.sessions.sim]
host = "127.0.0.1"
port = {port}
sender_comp_id = "APPLIANCE"
target_comp_id = "SIMEX"
venue = "binance"
[[venues]]
name = "binance"
[[instruments]]
venue = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.001"
""")
    argv = [sys.executable, "-m", "appliance.cli", "--config", str(cfg), "fix", "exchange",
            "--port", str(port), "--ref", "BTCUSDT=100"]
    seen = []
    seq_out = []
    for run, (seq_in, clord) in enumerate(((1, "1"), (3, "2"))):
        ex = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert ex.stdout.readline().startswith("listening 127.0.0.1:")
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            p = simplefix.FixParser()
            s.sendall(_frame("A", seq_in, (98, 0), (108, 30)))
            logon = _read_until(s, p, lambda m: m.get(35) == b"A")[-1]
            seq_out.append(int(logon.get(34)))
            s.sendall(_frame("D", seq_in + 1, (11, clord), (55, "BTCUSDT"), (54, 1),
                             (60, "20260101-00:00:00.000"), (38, "1"), (40, 2), (44, "101"), (59, 1)))
            got = _read_until(s, p, lambda m: m.get(150) == b"F")
            ers = [m for m in got if m.get(35) == b"8"]
            seen += [(m.get(17), m.get(37)) for m in ers]
            assert not [m for m in got if m.get(35) == b"2"]       # no resend request: in sequence
            s.close()
        finally:
            ex.send_signal(signal.SIGTERM)
            assert ex.wait(30) == 0
    assert seq_out[1] > seq_out[0] + 1                 # the exchange's numbers continued
    exec_ids = [e for e, _ in seen]
    assert len(set(exec_ids)) == len(exec_ids) == 4
    assert seen[0][1] != seen[2][1]                    # OrderIDs differ across runs too
    assert os.path.exists(tmp_path / "state" / "fix-exchange" / "exchange.boot")


def test_cli_bad_arguments_get_one_line_and_exit_2(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f'[appliance]\nstate_dir = "{tmp_path}/state"\n[sim.exchange]\nqueue_model = "fifo"\n')
    ok_cfg = tmp_path / "ok.toml"
    ok_cfg.write_text(f'[appliance]\nstate_dir = "{tmp_path}/state"\n')
    base = [sys.executable, "-m", "appliance.cli"]
    cases = [
        ([*base, "--config", str(ok_cfg), "fix", "exchange", "--port", "0", "--ref", "NOEQUALS"], "SYMBOL=PRICE"),
        ([*base, "--config", str(ok_cfg), "fix", "exchange", "--port", "0", "--ref", "BTCUSDT=-1"], "must be > 0"),
        ([*base, "--config", str(ok_cfg), "fix", "exchange", "--port", str(busy.getsockname()[1])], ""),
        ([*base, "--config", str(cfg), "fix", "exchange", "--port", "0"], "queue_model"),
    ]
    try:
        for argv, msg in cases:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            assert r.returncode == 2, (argv, r.stdout, r.stderr)
            # before the actor exists: "appliance fix exchange: ..."; after: the actor's ERROR line
            err = [ln for ln in r.stderr.splitlines()
                   if "appliance fix exchange:" in ln or " ERROR " in ln]
            assert len(err) == 1 and msg in err[0] and "Traceback" not in r.stderr, r.stderr
    finally:
        busy.close()

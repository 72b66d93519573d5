"""Compiled FIX codec against simplefix: byte equality of encoded orders, agreement of parsed
execution reports, and streams arriving split, batched, garbled or truncated."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import numpy as np
import pytest
import simplefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from numba import njit

from appliance.fix import codec as C
from appliance.transport import records as R

INSTRUMENTS = [("BTCUSDT", "0.01", "0.00001"), ("ETH-USD", "0.05", "1"), ("X", "1", "0.1"),
               ("DOGE/USDT", "0.000001", "100")]
SENDER, TARGET = "APPLIANCE", "SIMEX"
ENC = C.Encoder("FIX.4.4", SENDER, TARGET, INSTRUMENTS)
INSTR, SYMS = ENC.instr, ENC.syms
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TIF_FIX = {R.TIF_GTC: "1", R.TIF_IOC: "3", R.TIF_FOK: "4", R.TIF_DAY: "0"}


def dec_str(units: int, size: str) -> str:
    """Reference rendering: units * size with exactly as many decimals as ``size`` has."""
    d = Decimal(size)
    places = max(0, -d.normalize().as_tuple().exponent)
    return f"{Decimal(units) * d:.{places}f}"


def fix_time(utc_ns: int) -> str:
    t = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=utc_ns // 1000)
    return t.strftime("%Y%m%d-%H:%M:%S.") + f"{(utc_ns // 1_000_000) % 1000:03d}"


def header(msg_type: str, seq: int, utc_ns: int) -> simplefix.FixMessage:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4")
    m.append_pair(35, msg_type)
    m.append_pair(49, SENDER)
    m.append_pair(56, TARGET)
    m.append_pair(34, seq)
    m.append_pair(52, fix_time(utc_ns))
    return m


def exec_inst(flags: int) -> str | None:
    v = []
    if flags & R.F_POST_ONLY:
        v.append("6")
    if flags & R.F_REDUCE_ONLY:
        v.append("E")
    return " ".join(v) or None


def rec_of(dtype, **fields):
    r = np.zeros(1, dtype)
    for k, v in fields.items():
        r[0][k] = v
    return r


# ---- generated field values ---------------------------------------------------------------------
u64 = hs.integers(0, 2 ** 64 - 1)
seqs = hs.integers(1, 10 ** 9)
times = hs.integers(0, 4_102_444_800 * 10 ** 9)          # 1970 .. 2100
instruments = hs.integers(0, len(INSTRUMENTS) - 1)
sides = hs.sampled_from([R.SIDE_BUY, R.SIDE_SELL])
qtys = hs.integers(1, 10 ** 12)
prices = hs.integers(-10 ** 9, 10 ** 12)
ord_types = hs.sampled_from([R.ORD_LIMIT, R.ORD_MARKET])
tifs = hs.sampled_from(list(TIF_FIX))
flag_sets = hs.sampled_from([0, R.F_POST_ONLY, R.F_REDUCE_ONLY, R.F_POST_ONLY | R.F_REDUCE_ONLY])


@SETTINGS
@given(clord=u64, seq=seqs, t=times, inst=instruments, side=sides, qty=qtys, px=prices,
       ot=ord_types, tif=tifs, flags=flag_sets)
def test_new_order_single_bytes_equal_simplefix(clord, seq, t, inst, side, qty, px, ot, tif, flags):
    sym, tick, lot = INSTRUMENTS[inst]
    rec = rec_of(R.NEW_ORDER, rtype=R.RT_NEW_ORDER, instrument=inst, clord_id=clord, price=px,
                 qty=qty, side=side, ord_type=ot, tif=tif, flags=flags)
    m = header("D", seq, t)
    m.append_pair(11, clord)
    m.append_pair(55, sym)
    m.append_pair(54, side)
    m.append_pair(38, dec_str(qty, lot))
    m.append_pair(40, "2" if ot == R.ORD_LIMIT else "1")
    if ot == R.ORD_LIMIT:
        m.append_pair(44, dec_str(px, tick))
    m.append_pair(59, TIF_FIX[tif])
    m.append_pair(18, exec_inst(flags))
    m.append_pair(60, fix_time(t))
    assert ENC.encode(rec, seq, t) == m.encode()


@SETTINGS
@given(clord=u64, orig=u64, seq=seqs, t=times, inst=instruments, side=sides, qty=qtys)
def test_cancel_request_bytes_equal_simplefix(clord, orig, seq, t, inst, side, qty):
    sym, tick, lot = INSTRUMENTS[inst]
    rec = rec_of(R.CANCEL, rtype=R.RT_CANCEL, instrument=inst, clord_id=clord, orig_clord_id=orig,
                 qty=qty, side=side)
    m = header("F", seq, t)
    m.append_pair(41, orig)
    m.append_pair(11, clord)
    m.append_pair(55, sym)
    m.append_pair(54, side)
    m.append_pair(38, dec_str(qty, lot))
    m.append_pair(60, fix_time(t))
    assert ENC.encode(rec, seq, t) == m.encode()


@SETTINGS
@given(clord=u64, orig=u64, seq=seqs, t=times, inst=instruments, side=sides, qty=qtys, px=prices,
       ot=ord_types, tif=tifs, flags=flag_sets)
def test_cancel_replace_bytes_equal_simplefix(clord, orig, seq, t, inst, side, qty, px, ot, tif, flags):
    sym, tick, lot = INSTRUMENTS[inst]
    rec = rec_of(R.REPLACE, rtype=R.RT_REPLACE, instrument=inst, clord_id=clord, orig_clord_id=orig,
                 price=px, qty=qty, side=side, ord_type=ot, tif=tif, flags=flags)
    m = header("G", seq, t)
    m.append_pair(41, orig)
    m.append_pair(11, clord)
    m.append_pair(55, sym)
    m.append_pair(54, side)
    m.append_pair(38, dec_str(qty, lot))
    m.append_pair(40, "2" if ot == R.ORD_LIMIT else "1")
    if ot == R.ORD_LIMIT:
        m.append_pair(44, dec_str(px, tick))
    m.append_pair(59, TIF_FIX[tif])
    m.append_pair(18, exec_inst(flags))
    m.append_pair(60, fix_time(t))
    assert ENC.encode(rec, seq, t) == m.encode()


@SETTINGS
@given(clord=u64, seq=seqs, t=times, inst=instruments, scope=hs.sampled_from([1, 7]))
def test_mass_cancel_bytes_equal_simplefix(clord, seq, t, inst, scope):
    rec = rec_of(R.MASS_CANCEL, rtype=R.RT_MASS_CANCEL, instrument=inst, clord_id=clord, scope=scope)
    m = header("q", seq, t)
    m.append_pair(11, clord)
    m.append_pair(530, scope)
    if scope == 1:
        m.append_pair(55, INSTRUMENTS[inst][0])
    m.append_pair(60, fix_time(t))
    assert ENC.encode(rec, seq, t) == m.encode()


@SETTINGS
@given(clord=u64, seq=seqs, t=times, inst=instruments, side=sides)
def test_order_status_request_bytes_equal_simplefix(clord, seq, t, inst, side):
    m = header("H", seq, t)
    m.append_pair(11, clord)
    m.append_pair(55, INSTRUMENTS[inst][0])
    m.append_pair(54, side)
    assert ENC.status_request(clord, inst, side, seq, t) == m.encode()


def test_short_body_gets_two_digit_body_length_and_valid_checksum():
    enc = C.Encoder("FIX.4.4", "A", "B", INSTRUMENTS)
    rec = rec_of(R.MASS_CANCEL, rtype=R.RT_MASS_CANCEL, clord_id=1, scope=7)
    m = simplefix.FixMessage()
    for tag, v in ((8, "FIX.4.4"), (35, "q"), (49, "A"), (56, "B"), (34, 1), (52, fix_time(0)),
                   (11, 1), (530, 7), (60, fix_time(0))):
        m.append_pair(tag, v)
    out = enc.encode(rec, 1, 0)
    assert out == m.encode()
    assert b"\x019=" in out and len(out.split(b"\x01")[1]) == 4  # "9=NN"


def test_timestamp_cache_hit_and_miss_render_the_same_bytes_as_simplefix():
    enc = C.Encoder("FIX.4.4", SENDER, TARGET, INSTRUMENTS)
    rec = rec_of(R.MASS_CANCEL, rtype=R.RT_MASS_CANCEL, clord_id=1, scope=7)
    base = 1_763_790_000_123_000_000
    # same ms twice (hit), next ms (miss), back to the first (miss), one day later (miss)
    for t in (base, base + 999_999, base + 1_000_000, base, base + 86_400 * 10 ** 9):
        m = header("q", 5, t)
        m.append_pair(11, 1)
        m.append_pair(530, 7)
        m.append_pair(60, fix_time(t))
        assert enc.encode(rec, 5, t) == m.encode()


def test_timestamp_cache_renders_only_the_milliseconds_within_a_second_and_all_else_in_full():
    """Every step of a walk through milliseconds of one second (forwards and back), across the
    second, the minute, the hour and the day, and to the same millisecond of another second,
    renders what simplefix does."""
    enc = C.Encoder("FIX.4.4", SENDER, TARGET, INSTRUMENTS)
    rec = rec_of(R.MASS_CANCEL, rtype=R.RT_MASS_CANCEL, clord_id=1, scope=7)
    day_end = 20_413 * 86_400 * 10 ** 9 - 1          # 2025-11-22 23:59:59.999999999
    ms = 10 ** 6
    walk = [day_end - 998 * ms, day_end - 997 * ms, day_end - 500 * ms, day_end - 998 * ms,
            day_end, day_end + 1, day_end + 1 + 5 * ms, day_end + 1 + 1000 * ms,
            day_end + 1 + 1005 * ms, day_end + 1 + 60_000 * ms, day_end + 1 + 3_600_000 * ms,
            day_end + 1 + 3_600_005 * ms, day_end + 1 + 3_600_005 * ms + 999_999]
    for t in walk:
        m = header("q", 5, t)
        m.append_pair(11, 1)
        m.append_pair(530, 7)
        m.append_pair(60, fix_time(t))
        assert enc.encode(rec, 5, t) == m.encode(), fix_time(t)


def test_timestamps_match_calendar_across_leap_days_and_centuries():
    days = [0, 59, 60, 365, 11016, 11017, 18321, 47541, 47542, 47481, 47482]  # incl. 2000-02-29, 2100-02-28/03-01
    out = np.zeros(32, dtype=np.uint8)
    for d in days:
        for ns in (0, 86_399_999_999_999, 43_210_987_654_321):
            t = d * 86_400 * 10 ** 9 + ns
            n = C.put_utc_timestamp(out, 0, t)
            assert out[:n].tobytes().decode() == fix_time(t)


@pytest.mark.parametrize("field, value, code", [
    ("side", 3, C.E_BAD_SIDE), ("qty", 0, C.E_BAD_QTY), ("qty", -5, C.E_BAD_QTY),
    ("ord_type", 9, C.E_BAD_ORD_TYPE), ("tif", 0, C.E_BAD_TIF), ("instrument", 99, C.E_BAD_INSTRUMENT),
    ("price", 2 ** 62, C.E_BAD_PRICE),
])
def test_invalid_new_order_is_refused_with_named_error(field, value, code):
    rec = rec_of(R.NEW_ORDER, rtype=R.RT_NEW_ORDER, clord_id=7, price=100, qty=1, side=1,
                 ord_type=R.ORD_LIMIT, tif=R.TIF_GTC)
    rec[0][field] = value
    with pytest.raises(C.CodecError, match=C.E_NAMES[code]):
        ENC.encode(rec, 1, 0)
    out = np.zeros(1024, dtype=np.uint8)
    row = rec.view(np.uint8).reshape(-1)
    assert C.encode_order(row, out, 0, ENC.begin, ENC.comp, 1, 0, C.new_time_cache(), INSTR, SYMS) == code


def test_encoder_refuses_when_output_buffer_has_no_room():
    rec = rec_of(R.NEW_ORDER, rtype=R.RT_NEW_ORDER, clord_id=7, price=100, qty=1, side=1,
                 ord_type=R.ORD_LIMIT, tif=R.TIF_GTC)
    out = np.zeros(500, dtype=np.uint8)
    row = rec.view(np.uint8).reshape(-1)
    assert C.encode_order(row, out, 0, ENC.begin, ENC.comp, 1, 0, C.new_time_cache(), INSTR, SYMS) == C.E_OUT_FULL
    assert not out.any()


@njit
def _render_uint(v, out):
    return C.put_uint(out, 0, v)


@njit
def _render_decimal(v, dec, out):
    return C.put_decimal(out, 0, v, dec)


@njit
def _render_padded(v, n, out):
    C.put_padded(out, n, v, n)


def _boundaries():
    vals = {0, 1, 2 ** 63 - 1}
    for k in range(1, 20):
        vals.update({10 ** k - 1, 10 ** k, 10 ** k + 1})
    return sorted(v for v in vals if v < 2 ** 63)


def test_digits_render_at_every_power_of_ten_and_every_width_and_decimal_count():
    out = np.zeros(64, np.uint8)
    for v in _boundaries():
        n = _render_uint(np.uint64(v), out)
        assert bytes(out[:n]) == str(v).encode(), v
        for width in (1, 2, 7, 20):
            _render_padded(np.uint64(v), width, out)
            assert bytes(out[:width]) == f"{v:0{width}d}"[-width:].encode(), (v, width)
        for dec in range(C.MAX_DEC + 1):
            for sv in (v, -v):
                n = _render_decimal(np.int64(sv), np.int64(dec), out)
                want = f"{Decimal(sv).scaleb(-dec):.{dec}f}" if dec else str(sv)
                assert bytes(out[:n]).decode() == want, (sv, dec)


def test_sizes_with_more_decimals_than_the_encoder_renders_are_refused():
    with pytest.raises(ValueError, match="more than 18 decimals"):
        C.instrument_tables([("X", "0." + "0" * 18 + "1", "1")])
    C.instrument_tables([("X", "0." + "0" * 17 + "1", "1")])


def test_non_order_record_is_refused():
    rec = rec_of(R.ACK, rtype=R.RT_ACK)
    with pytest.raises(C.CodecError, match="not an order record"):
        ENC.encode(rec, 1, 0)


# ---- parser -------------------------------------------------------------------------------------
EXEC_TYPES = ["0", "4", "5", "6", "A", "E", "I", "C", "F", "8"]


@hs.composite
def exec_reports(draw):
    inst = draw(instruments)
    sym, tick, lot = INSTRUMENTS[inst]
    f = {
        "clord": draw(u64), "orig": draw(hs.none() | u64), "inst": inst,
        "exec_type": draw(hs.sampled_from(EXEC_TYPES)),
        "ord_status": draw(hs.sampled_from(list("0124568ACE"))),
        "side": draw(sides), "price": draw(hs.none() | prices), "qty": draw(qtys),
        "leaves": draw(hs.integers(0, 10 ** 12)), "cum": draw(hs.integers(0, 10 ** 12)),
        "last_px": draw(prices), "last_qty": draw(qtys),
        "fee": draw(hs.none() | hs.integers(-10 ** 12, 10 ** 12)),
        "liq": draw(hs.none() | hs.sampled_from([1, 2])),
        "order_id": draw(hs.text("ABCDEFabcdef0123456789-", min_size=1, max_size=30)),
        "exec_id": draw(hs.text("XYZxyz0123456789", min_size=1, max_size=20)),
        "reason": draw(hs.integers(0, 99)), "text": draw(hs.none() | hs.text("abc XYZ.:", max_size=60)),
        "possdup": draw(hs.booleans()), "trailing_zeros": draw(hs.integers(0, 3)),
    }
    return f


def er_message(f, seq) -> simplefix.FixMessage:
    sym, tick, lot = INSTRUMENTS[f["inst"]]
    z = "0" * f["trailing_zeros"]

    def d(units, size):
        s = dec_str(units, size)
        return s + z if "." in s else s

    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4")
    m.append_pair(35, "8")
    m.append_pair(49, TARGET)
    m.append_pair(56, SENDER)
    m.append_pair(34, seq)
    if f["possdup"]:
        m.append_pair(43, "Y")
    m.append_pair(52, "20260101-00:00:00.000")
    m.append_pair(37, f["order_id"])
    m.append_pair(11, f["clord"])
    m.append_pair(41, f["orig"])
    m.append_pair(17, f["exec_id"])
    m.append_pair(150, f["exec_type"])
    m.append_pair(39, f["ord_status"])
    m.append_pair(55, sym)
    m.append_pair(54, f["side"])
    m.append_pair(38, d(f["qty"], lot))
    if f["price"] is not None:
        m.append_pair(44, d(f["price"], tick))
    if f["exec_type"] == "F":
        m.append_pair(31, d(f["last_px"], tick))
        m.append_pair(32, d(f["last_qty"], lot))
        if f["fee"] is not None:
            m.append_pair(12, dec_str(f["fee"], "0.00000001"))
        if f["liq"] is not None:
            m.append_pair(851, f["liq"])
    if f["exec_type"] == "8":
        m.append_pair(103, f["reason"])
    m.append_pair(151, d(f["leaves"], lot))
    m.append_pair(14, d(f["cum"], lot))
    if f["text"]:
        m.append_pair(58, f["text"])
    return m


def expected_from_simplefix(raw: bytes):
    """Decode a message with simplefix and Decimal into the exec-record fields we expect."""
    p = simplefix.FixParser()
    p.append_buffer(raw)
    m = p.get_message()
    assert m is not None
    sym = (m.get(55) or b"").decode()
    known = [i for i, x in enumerate(INSTRUMENTS) if x[0] == sym]
    inst = known[0] if known else C.NO_INSTRUMENT
    _, tick, lot = INSTRUMENTS[known[0]] if known else (None, "1", "1")

    def units(tag, size):
        v = m.get(tag)
        return None if v is None else int(Decimal(v.decode()) / Decimal(size))

    e = {"clord_id": int(m.get(11)), "instrument": inst, "session": 3, "venue": R.VENUE_SIM,
         "flags": R.F_POSS_DUP if m.get(43) == b"Y" else 0, "origin_tsc": 99}
    if m.get(41) is not None:
        e["orig_clord_id"] = int(m.get(41))
    et = m.get(150)
    if m.get(35) == b"9" or et == b"8":
        e.update(rtype=R.RT_REJECT, ord_status=m.get(39)[0], is_cancel_reject=int(m.get(35) == b"9"),
                 reason=int(m.get(103) or m.get(102) or 0),
                 text=(m.get(58) or b"")[:C.TEXT_LEN])
    elif et == b"F":
        e.update(rtype=R.RT_FILL, last_price=units(31, tick), last_qty=units(32, lot),
                 leaves_qty=units(151, lot), cum_qty=units(14, lot),
                 fee=units(12, "0.00000001") or 0, ord_status=m.get(39)[0], side=int(m.get(54)),
                 liquidity=int(m.get(851) or 0))
    else:
        e.update(rtype=R.RT_ACK, price=units(44, tick) or 0, qty=units(38, lot),
                 leaves_qty=units(151, lot), cum_qty=units(14, lot),
                 venue_order_id=m.get(37)[:C.VENUE_ID_LEN], exec_type=et[0],
                 ord_status=m.get(39)[0], side=int(m.get(54)))
    return e


def check_record(row: np.ndarray, e: dict) -> None:
    rt = int(row[8])
    assert rt == e["rtype"], (rt, e)
    rec = row.view(R.RECORD_DTYPES[rt])[0]
    for k, v in e.items():
        got = rec[k]
        if isinstance(v, bytes):
            assert bytes(got) == v, (k, got, v)
        else:
            assert int(got) == v, (k, got, v)


def make_stream(**kw):
    return C.ExecStream(INSTR, SYMS, session=3, **kw)


@SETTINGS
@given(reports=hs.lists(exec_reports(), min_size=1, max_size=6), seed=hs.integers(0, 2 ** 32))
def test_execution_reports_agree_with_simplefix_when_split_and_batched(reports, seed):
    raws = [er_message(f, i + 1).encode() for i, f in enumerate(reports)]
    stream = b"".join(raws)
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(stream)), min(len(stream) - 1, rnd.randint(0, 8))))
    s = make_stream()
    rows = []
    prev = 0
    for c in cuts + [len(stream)]:
        got, msgs = s.feed(stream[prev:c], rx_tsc=99)
        assert msgs == []
        rows.extend(got)
        prev = c
    assert len(rows) == len(raws)
    for row, raw in zip(rows, raws):
        check_record(row, expected_from_simplefix(raw))
    assert s.expect_seq == len(raws) + 1
    assert s.pending() == b""


def cancel_reject(clord, orig, seq, reason=1, text="Unknown order") -> bytes:
    m = simplefix.FixMessage()
    for tag, v in ((8, "FIX.4.4"), (35, "9"), (49, TARGET), (56, SENDER), (34, seq),
                   (52, "20260101-00:00:00.000"), (37, "NONE"), (11, clord), (41, orig), (39, "8"),
                   (434, 1), (102, reason), (58, text)):
        m.append_pair(tag, v)
    return m.encode()


def heartbeat(seq) -> bytes:
    m = simplefix.FixMessage()
    for tag, v in ((8, "FIX.4.4"), (35, "0"), (49, TARGET), (56, SENDER), (34, seq),
                   (52, "20260101-00:00:00.000")):
        m.append_pair(tag, v)
    return m.encode()


def ack(clord, seq, inst=0) -> bytes:
    f = {"clord": clord, "orig": None, "inst": inst, "exec_type": "0", "ord_status": "0", "side": 1,
         "price": 12345, "qty": 7, "leaves": 7, "cum": 0, "last_px": 0, "last_qty": 1, "fee": None,
         "liq": None, "order_id": f"V{clord}", "exec_id": f"E{clord}", "reason": 0, "text": None,
         "possdup": False, "trailing_zeros": 0}
    return er_message(f, seq).encode()


def test_cancel_reject_becomes_reject_record_with_reason_and_text():
    raw = cancel_reject(55, 54, 1, reason=1, text="Unknown order")
    rows, msgs = make_stream().feed(raw, rx_tsc=99)
    assert msgs == [] and len(rows) == 1
    check_record(rows[0], expected_from_simplefix(raw))
    rec = rows[0].view(R.REJECT)[0]
    assert rec["is_cancel_reject"] == 1 and rec["text"] == b"Unknown order"


def test_admin_message_in_sequence_goes_to_session_layer_between_reports():
    stream = ack(1, 1) + heartbeat(2) + ack(2, 3)
    seen = []
    s = make_stream()

    def on_session(msg, seq):
        seen.append((msg, seq))
        s.expect_seq = seq + 1

    rows, msgs = s.feed(stream, 99, on_session)
    assert [r.view(R.ACK)[0]["clord_id"] for r in rows] == [1, 2]
    assert seen == [(heartbeat(2), 2)]
    assert msgs == [heartbeat(2)]
    assert s.expect_seq == 4


def test_sequence_gap_hands_message_to_session_and_does_not_advance():
    s = make_stream()
    rows, msgs = s.feed(ack(1, 1) + ack(2, 5), 99)
    assert len(rows) == 1 and msgs == [ack(2, 5)]
    assert s.expect_seq == 2
    assert int(s.st[C.ST_MSG_SEQ]) == 5
    # the resent messages arriving in order are parsed again on the fast path
    rows, msgs = s.feed(ack(3, 2) + ack(4, 3), 99)
    assert [r.view(R.ACK)[0]["clord_id"] for r in rows] == [3, 4] and msgs == []


def test_garbage_between_messages_is_skipped_and_counted():
    junk1 = b"\x00\xffgarbage 8=FIY\x01"
    junk2 = b"9=12\x0135=8\x01"
    s = make_stream()
    rows, msgs = s.feed(junk1 + ack(1, 1) + junk2 + ack(2, 2) + b"8=FIX.4.4\x019=abc\x01" + ack(3, 3), 99)
    assert [r.view(R.ACK)[0]["clord_id"] for r in rows] == [1, 2, 3]
    c = s.counters()
    assert c["garbage_bytes"] >= len(junk1) + len(junk2) and c["resyncs"] >= 3
    assert msgs == []


def test_random_bytes_never_crash_and_stream_recovers():
    rnd = random.Random(7)
    s = make_stream()
    for _ in range(200):
        blob = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 300)))
        if rnd.random() < 0.3:
            blob += b"8=FIX.4.4\x019=" + bytes(rnd.randrange(48, 58) for _ in range(3))
        s.feed(blob, 99)
    # whatever partial junk is pending, a clean message still comes through (a dangling prefix
    # swallows at most one message, which the sequence number then reports as a gap)
    rows, msgs = s.feed(b"\x01" * 70000 + ack(1, 1) + ack(2, 2), 99)
    assert [r.view(R.ACK)[0]["clord_id"] for r in rows] == [1, 2]


def test_bad_checksum_message_is_dropped_counted_and_sequence_not_consumed():
    bad = bytearray(ack(1, 1))
    bad[-4:-1] = b"%03d" % ((int(bad[-4:-1]) + 1) % 256)
    s = make_stream()
    rows, msgs = s.feed(bytes(bad) + ack(2, 1), 99)
    assert [r.view(R.ACK)[0]["clord_id"] for r in rows] == [2]
    assert s.counters()["bad_checksum"] == 1


def test_truncated_message_waits_for_the_rest():
    raw = ack(1, 1)
    s = make_stream()
    for cut in (1, 2, 5, 12, 20, len(raw) - 8, len(raw) - 1):
        s2 = make_stream()
        rows, msgs = s2.feed(raw[:cut], 99)
        assert len(rows) == 0 and msgs == [] and s2.pending() == raw[:cut]
        rows, msgs = s2.feed(raw[cut:], 99)
        assert len(rows) == 1 and s2.pending() == b""
    assert s.counters()["garbage_bytes"] == 0


def test_report_with_undecodable_fields_is_counted_and_skipped():
    m = simplefix.FixMessage()
    for tag, v in ((8, "FIX.4.4"), (35, "8"), (49, TARGET), (56, SENDER), (34, 1), (52, "x"),
                   (37, "V"), (11, 5), (17, "E"), (150, "0"), (39, "0"), (55, "BTCUSDT"), (54, 1),
                   (38, "0.000001"), (151, "1"), (14, "0")):  # qty below one lot
        m.append_pair(tag, v)
    s = make_stream()
    rows, msgs = s.feed(m.encode() + ack(6, 2), 99)
    assert [r.view(R.ACK)[0]["clord_id"] for r in rows] == [6]
    assert s.counters()["bad_msg"] == 1 and s.expect_seq == 3


def test_unknown_symbol_is_counted_and_reject_still_delivered():
    m = simplefix.FixMessage()
    for tag, v in ((8, "FIX.4.4"), (35, "8"), (49, TARGET), (56, SENDER), (34, 1), (52, "x"),
                   (37, "NONE"), (11, 5), (17, "E"), (150, "8"), (39, "8"), (55, "NOPE"),
                   (54, 1), (151, "0"), (14, "0"), (103, 1), (58, "unknown symbol")):
        m.append_pair(tag, v)
    s = make_stream()
    rows, _ = s.feed(m.encode(), 99)
    rec = rows[0].view(R.REJECT)[0]
    assert rec["rtype"] == R.RT_REJECT and rec["instrument"] == C.NO_INSTRUMENT and rec["reason"] == 1
    assert s.counters()["unknown_symbol"] == 1


def test_output_full_resumes_without_losing_records():
    s = make_stream(max_out=2)
    stream = b"".join(ack(i, i) for i in range(1, 8))
    rows, msgs = s.feed(stream, 99)
    assert [int(r.view(R.ACK)[0]["clord_id"]) for r in rows] == list(range(1, 8))

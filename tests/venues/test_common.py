"""Shared venue pieces: decimal grids, the compiled scanner, apply-and-publish onto a real ring,
book status records and the stale check."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.transport import records, ring
from appliance.venues import common, scan


def _b(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8)


def _units(text, dec):
    b = _b(text)
    v, nxt, rc = scan.parse_units(b, 0, len(b), dec)
    return v, nxt, rc


def test_grid_of_tick_strings_counts_decimals_and_step():
    assert common.grid("0.00010000") == (8, 10000)
    assert common.grid("0.5") == (1, 5)
    assert common.grid("1") == (0, 1)
    assert common.grid("1e-8") == (8, 1)


def test_grid_rejects_zero_and_garbage():
    for bad in ("0", "-0.1", "abc", ""):
        with pytest.raises(common.InstrumentError):
            common.grid(bad)


def test_decimal_string_to_ticks_is_exact_and_off_grid_is_an_error():
    ins = common.Instrument.make("X", "A-B", "0.0005", "0.001")
    assert ins.price_ticks("1.2345") == 2469
    assert ins.price_str(2469) == "1.2345"
    assert ins.qty_lots("0.123000") == 123
    with pytest.raises(common.OffGridError):
        ins.price_ticks("1.2346")
    with pytest.raises(common.OffGridError):
        ins.qty_lots("0.0001")


@pytest.mark.parametrize("text,dec,want", [
    ('"0.35210000"', 8, 35210000),
    ("0.35210000", 4, 3521),
    ("12", 2, 1200),
    ("-1.5", 1, -15),
    ("1.1e-7", 10, 1100),
    ("2E+3", 0, 2000),
    ('"0.00000000000000000000"', 8, 0),
])
def test_parse_units_reads_quoted_bare_signed_and_exponent_numbers(text, dec, want):
    v, nxt, rc = _units(text, dec)
    assert rc == scan.OK
    assert v == want
    assert nxt == len(text)


def test_parse_units_flags_digits_beyond_the_grid_overflow_and_garbage():
    assert _units("0.123456789", 8)[2] == scan.E_OFF_GRID
    assert _units("99999999999999999999", 0)[2] == scan.E_OVERFLOW
    assert _units("123456789012", 8)[2] == scan.E_OVERFLOW
    for bad in ('"abc"', '"1.5', "", "-", "1e", '"'):
        assert _units(bad, 2)[2] != scan.OK, bad


def test_parse_grid_rejects_values_between_ticks():
    b = _b('"1.2346"')
    assert scan.parse_grid(b, 0, len(b), 4, 5)[2] == scan.E_OFF_GRID
    b = _b('"1.2345"')
    assert scan.parse_grid(b, 0, len(b), 4, 5)[:1] == (2469,)


def test_find_key_needs_the_colon_and_skip_value_handles_nesting_and_strings():
    b = _b('{"a":"x\\"}]","b" : [1,{"c":[2]}],"c":3}')
    assert scan.find_key(b, 0, len(b), scan.key("zz")) == -1
    kb = scan.find_key(b, 0, len(b), scan.key("b"))
    end = scan.skip_value(b, kb, len(b))
    assert b[end] == ord(",")
    kc = scan.find_key(b, end, len(b), scan.key("c"))
    assert scan.parse_int(b, kc, len(b))[0] == 3
    bad = _b('[1,[2,')
    assert scan.skip_value(bad, 0, len(bad)) == -1


def test_match_symbol_finds_exact_names_only():
    syms, lens = scan.symbol_table(["BTCUSD", "ETHUSD", "BTCUSDT"])
    b = _b("xBTCUSDTx")
    assert scan.match_symbol(b, 1, 8, syms, lens) == 2
    assert scan.match_symbol(b, 1, 7, syms, lens) == 0
    assert scan.match_symbol(b, 1, 5, syms, lens) == -1


def _rows(n=16):
    return np.zeros((n, 8), np.int64)


def test_parse_levels_reads_side_from_an_element_and_skips_extra_elements():
    rows = _rows()
    b = _b('[["buy","1.5","2",["x"]], ["sell", "1.6", "0"]]')
    n, nxt, rc = common.parse_levels(b, 0, len(b), (1, 1, 0, 1), 3, (0, 0, 1, 2), 77, rows, 0)
    assert rc == scan.OK and n == 2 and nxt == len(b)
    assert rows[0].tolist() == [common.K_L2, 3, records.SIDE_BUY, 15, 2, 77, 0, 0]
    assert rows[1].tolist() == [common.K_L2, 3, records.SIDE_SELL, 16, 0, 77, 0, 0]


@pytest.mark.parametrize("text", ['[["1","2"', '[["1"]]', '[["x","2"]]', '{"a":1}', '[["1","-2"]]',
                                  '[["buy","1","2"]]'])
def test_parse_levels_rejects_truncated_or_malformed_arrays(text):
    b = _b(text)
    side_elem = -1 if "buy" not in text else 5
    n, _, rc = common.parse_levels(b, 0, len(b), (0, 1, 0, 1), 0, (1, side_elem, 0, 1), 0,
                                   _rows(), 0)
    assert rc != scan.OK


def test_parse_levels_reports_a_full_row_buffer():
    b = _b('[["1","2"],["2","2"],["3","2"]]')
    n, _, rc = common.parse_levels(b, 0, len(b), (0, 1, 0, 1), 0, (1, -1, 0, 1), 0, _rows(2), 0)
    assert rc == scan.E_FULL


class _Feed(common.BaseFeed):
    NAME = "test"
    VENUE_ID = records.VENUE_SIM
    BOOK_HEARTBEAT = True

    def on_frame(self, frame, recv_tsc):
        raise AssertionError("not used")


def _feed(cap=1 << 10):
    ins = [common.Instrument.make("AAA", "A-A", "0.01", "1"), common.Instrument.make("BBB", "B-B", "1", "1")]
    return _Feed(ins, common.RecordWriter.local(cap))


def _drain(w, n=4096):
    cur = ring.local_cursor(w.hdr)
    out = np.zeros((n, records.MD_RECORD_SIZE), np.uint8)
    m = ring.drain(w.hdr, w.data, cur, out, n)
    return out[:m]


def _l2(rows, k, inst, side, p, q, seq=0):
    rows[k] = (common.K_L2, inst, side, p, q, seq, 0, 0)


def test_apply_rows_updates_book_and_publishes_l2_then_batch_end_with_origin_tsc():
    f = _feed()
    _l2(f.rows, 0, 0, records.SIDE_BUY, 100, 5, 9)
    _l2(f.rows, 1, 0, records.SIDE_SELL, 103, 7, 9)
    f.rows[2] = (common.K_TRADE, 0, records.SIDE_SELL, 101, 1, 55, 0, 0)
    bits = f._apply(3, 123456)
    assert bits == 0
    recs = _drain(f.writer)
    kinds = [int(r[8]) for r in recs]
    assert kinds == [records.RT_L2_UPDATE, records.RT_L2_UPDATE, records.RT_TRADE, records.RT_BATCH_END]
    l2 = recs[0].view(records.L2_UPDATE)[0]
    assert (l2["price"], l2["qty"], l2["side"], l2["venue_seq"], l2["origin_tsc"]) == (100, 5, records.SIDE_BUY, 9, 123456)
    assert l2["venue"] == records.VENUE_SIM
    t = recs[2].view(records.TRADE)[0]
    assert (t["price"], t["qty"], t["trade_id"], t["side"]) == (101, 1, 55, records.SIDE_SELL)
    e = recs[3].view(records.BATCH_END)[0]
    assert (e["bid_price"], e["ask_price"], e["n_updates"]) == (100, 103, 2)
    assert e["flags"] & records.F_LAST
    assert f.counters.records == 4


def test_crossed_book_is_invalidated_with_a_status_record_and_resync_requested():
    f = _feed()
    f._validate(0, 1)
    _l2(f.rows, 0, 0, records.SIDE_BUY, 105, 5)
    _l2(f.rows, 1, 0, records.SIDE_SELL, 103, 7)
    bits = f._apply(2, 2)
    assert bits & common.A_CROSSED
    assert not f.valid[0]
    assert f.counters.crossed == 1 and f.counters.resyncs == 1
    assert f.wants_resubscribe() and not f.wants_resubscribe()
    st = [r.view(records.BOOK_STATUS)[0] for r in _drain(f.writer) if r[8] == records.RT_BOOK_STATUS]
    assert [(s["status"], s["reason"]) for s in st] == [(records.BOOK_VALID, records.BR_NONE),
                                                         (records.BOOK_INVALID, records.BR_CROSSED)]


def test_a_row_the_book_rejects_is_counted_and_resyncs_the_book():
    f = _feed()
    f._validate(1, 1)
    _l2(f.rows, 0, 1, records.SIDE_BUY, -3, 5)
    bits = f._apply(1, 2)
    assert bits & common.A_BAD_ROW
    assert f.counters.errors == 1 and not f.valid[1]


def test_disconnect_marks_every_book_invalid_once():
    f = _feed()
    f._validate(0, 1)
    f._validate(1, 1)
    f.on_disconnect()
    f.on_disconnect()
    st = [r.view(records.BOOK_STATUS)[0] for r in _drain(f.writer) if r[8] == records.RT_BOOK_STATUS]
    assert [(int(s["instrument"]), s["status"], s["reason"]) for s in st][2:] == [
        (0, records.BOOK_INVALID, records.BR_DISCONNECT), (1, records.BOOK_INVALID, records.BR_DISCONNECT)]


def test_stale_book_is_invalidated_only_after_the_timeout():
    from appliance.transport import clock
    cal = clock.calibration()
    hz = int(cal[clock.C_HZ])
    f = _feed()
    f._validate(0, 1)
    f.last_tsc[0] = 10 * hz
    f.check_stale(10 * hz + hz // 2, 1_000_000_000)
    assert f.valid[0]
    f.check_stale(12 * hz, 1_000_000_000)
    assert not f.valid[0] and f.counters.stale == 1


def test_record_writer_refuses_a_ring_of_the_wrong_record_size():
    hdr, data = ring.local_ring(128, 16)
    with pytest.raises(ValueError, match="64-byte"):
        common.RecordWriter(hdr, data)


def test_top_returns_decimal_strings_best_first():
    f = _feed()
    for k, p in enumerate((100, 102, 101)):
        _l2(f.rows, k, 0, records.SIDE_BUY, p, k + 1)
    _l2(f.rows, 3, 0, records.SIDE_SELL, 110, 4)
    f._apply(4, 1)
    assert f.top("AAA", 2) == {"bids": [["1.02", "2"], ["1.01", "3"]], "asks": [["1.10", "4"]]}


def test_metadata_body_and_configuration_come_from_x0_lines():
    meta = b"https://x/a -> 1.0: [1]\nhttps://x/products -> 2.0: {\"k\": 1}\nconfiguration: {\"l2_book\": [\"A-B\"]}\n"
    assert common.metadata_body(meta, "products") == b'{"k": 1}'
    assert common.configured_l2(meta) == ["A-B"]
    with pytest.raises(common.InstrumentError):
        common.metadata_body(meta, "nothing")


@pytest.mark.parametrize("size", [20, 125, 126, 4095, 4096, 4097, 4100, 65535, 65536, 70000])
def test_on_frame_hands_every_size_of_frame_to_the_kernel_through_the_pump(size):
    """``Feed.on_frame`` (the Python paths: fragments, frames buffered for a snapshot, replays)
    enters through the venue's compiled pump with the frame as one WebSocket frame (7-, 16- and
    64-bit lengths; its receive buffer grows to fit): every frame reaches the kernel once."""
    from appliance.venues import binance
    feed = common.quiet(binance.Feed([common.Instrument.make("BTCUSDT", "BTCUSDT", "0.01",
                                                             "0.00001")],
                                     common.RecordWriter.local(1024)))
    head = b'{"stream":"x","data":{"e":"unknown","pad":"'
    frame = (head + b"a" * size)[:size - 3] + b'"}}'
    assert len(frame) == size or size < len(head)
    for k in range(3):
        feed.on_frame(frame, 1)
        assert feed.st.cnt[common.N_FRAMES] == k + 1   # (an unknown event: counted as bad)

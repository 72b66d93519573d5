"""Binance: compiled parse == plain-JSON parse on every recorded frame, books == SortedDict
reference, the lastUpdateId first-update rule, gap -> snapshot refetch -> book correct again,
garbage frames counted and never fatal."""
from __future__ import annotations

import orjson

from appliance.transport import records, ring
from appliance.venues import binance, common, recording
from tests.venues.conftest import (DATA, SESSIONS, check_books_against_reference,
                               check_every_frame_against_reference, meta_of)

import numpy as np


def test_every_recorded_frame_parses_like_the_json_reference():
    assert check_every_frame_against_reference("binance") == 263


def test_books_follow_the_sortedcontainers_reference_through_the_session():
    feed = check_books_against_reference("binance")
    assert feed.counters.errors == 0 and feed.counters.gaps == 0


def test_instruments_carry_md_grid_and_trading_tick_from_exchange_info():
    ins = binance.load_instruments(meta_of("binance"))
    assert [i.symbol for i in ins] == ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
    nkn = ins[0]
    assert nkn.extra["order_tick"] == "0.00010000" and nkn.extra["order_lot"] == "1.00000000"
    assert nkn.price_ticks("0.25974000") == 25974000      # legacy off-tick level still exact


def test_stream_path_subscribes_depth_ticker_and_trades():
    ins = binance.load_instruments(meta_of("binance"), ["NKNUSDT"])
    assert binance.stream_path(ins) == "/stream?streams=nknusdt@depth@100ms/nknusdt@bookTicker/nknusdt@aggTrade"
    assert binance.subscribe_messages(ins) == []


def _session():
    sess = recording.open_session(DATA / SESSIONS["binance"])
    return sess, binance.load_instruments(sess.metadata)


def _snapshot(sess, sym):
    return next(b for url, ts, b in sess.snapshots if f"symbol={sym}&" in url)


def test_first_nknusdt_update_equal_to_the_snapshot_id_is_dropped():
    sess, ins = _session()
    feed = binance.Feed(ins, common.RecordWriter.local())
    feed.snapshot_requests()
    frames = [f for _, f in recording.frames(sess.path) if b'"s":"NKNUSDT","U"' in f]
    first = orjson.loads(frames[0])["data"]
    snap_id = orjson.loads(_snapshot(sess, "NKNUSDT"))["lastUpdateId"]
    assert first["u"] == snap_id
    feed.on_frame(frames[0], 1)                  # buffered: no snapshot yet
    assert feed.counters.buffered == 1
    feed.on_snapshot("NKNUSDT", _snapshot(sess, "NKNUSDT"), 2)
    assert feed.counters.dropped == 1            # u == lastUpdateId: already in the snapshot
    assert feed.last_id[0] == snap_id
    feed.on_frame(frames[1], 3)
    assert feed.last_id[0] == orjson.loads(frames[1])["data"]["u"]
    assert feed.is_valid("NKNUSDT") and feed.counters.gaps == 0


def _rest_body(feed, b, last_id):
    ins = feed.instruments[b]
    return orjson.dumps({"lastUpdateId": last_id,
                         "bids": [[ins.price_str(p), ins.qty_str(q)] for p, q in feed.book_levels(b, 0)],
                         "asks": [[ins.price_str(p), ins.qty_str(q)] for p, q in feed.book_levels(b, 1)]})


def test_injected_gap_invalidates_refetches_snapshot_and_book_equals_reference_again():
    sess, ins = _session()
    ref = binance.Feed(ins, common.RecordWriter.local())     # sees every frame
    feed = binance.Feed(ins, common.RecordWriter.local())    # loses one update
    for f in (ref, feed):
        f.snapshot_requests()
        f.on_snapshot("NKNUSDT", _snapshot(sess, "NKNUSDT"), 1)
    frames = [f for _, f in recording.frames(sess.path) if b'"s":"NKNUSDT","U"' in f]
    for k, fr in enumerate(frames[1:], 1):
        ref.on_frame(fr, k)
        if k == 20:
            continue                                          # lost on the way
        feed.on_frame(fr, k)
        if k == 21:
            assert feed.counters.gaps == 1 and not feed.is_valid("NKNUSDT")
            assert feed.snapshot_requests() == [("NKNUSDT", "/api/v3/depth?symbol=NKNUSDT&limit=1000")]
        if k == 25:
            # the refetched snapshot: the true book as of update 25
            feed.on_snapshot("NKNUSDT", _rest_body(ref, 0, int(ref.last_id[0])), k)
            assert feed.is_valid("NKNUSDT")
    assert feed.counters.resyncs == 1
    assert feed.book_levels(0, 0) == ref.book_levels(0, 0)
    assert feed.book_levels(0, 1) == ref.book_levels(0, 1)
    # the status records on the ring tell the story: valid, invalid(gap), valid
    hdr, data = feed.writer.hdr, feed.writer.data
    out = np.zeros((1 << 16, 64), np.uint8)
    m = ring.drain(hdr, data, ring.local_cursor(hdr), out, 1 << 16)
    st = [(int(r.view(records.BOOK_STATUS)[0]["status"]), int(r.view(records.BOOK_STATUS)[0]["reason"]))
          for r in out[:m] if r[8] == records.RT_BOOK_STATUS and r.view(records.BOOK_STATUS)[0]["instrument"] == 0]
    assert st == [(records.BOOK_VALID, 0), (records.BOOK_INVALID, records.BR_GAP), (records.BOOK_VALID, 0)]


def test_garbage_and_truncated_frames_are_counted_and_never_fatal():
    sess, ins = _session()
    feed = binance.Feed(ins, common.RecordWriter.local())
    feed.snapshot_requests()
    feed.on_snapshot("NKNUSDT", _snapshot(sess, "NKNUSDT"), 1)
    good = [f for _, f in recording.frames(sess.path) if b'"s":"NKNUSDT","U"' in f][1]
    for junk in (b"", b"\x00\xff garbage", b"{", b'{"stream":"x","data":{"e":"depthUpdate"}}',
                 good[: len(good) // 2], good.replace(b'"0.', b'"0.x'),
                 b'{"data":{"e":"depthUpdate","s":"NOPE","U":1,"u":2,"b":[],"a":[]}}'):
        feed.on_frame(junk, 2)
    assert feed.counters.errors == 7
    assert feed.counters.frames == 7
    # the truncated / corrupted NKNUSDT updates lost data: the book was resynced
    assert not feed.is_valid("NKNUSDT") and feed.counters.resyncs == 1


def test_reconnect_rebuilds_from_a_new_snapshot_not_from_the_old_sequence():
    sess, ins = _session()
    feed = binance.Feed(ins, common.RecordWriter.local())
    feed.snapshot_requests()
    feed.on_snapshot("NKNUSDT", _snapshot(sess, "NKNUSDT"), 1)
    frames = [f for _, f in recording.frames(sess.path) if b'"s":"NKNUSDT","U"' in f]
    feed.on_frame(frames[1], 2)
    assert feed.is_valid("NKNUSDT")
    feed.on_disconnect()
    assert not feed.is_valid("NKNUSDT")
    feed.on_reconnect()
    assert ("NKNUSDT", "/api/v3/depth?symbol=NKNUSDT&limit=1000") in feed.snapshot_requests()
    feed.on_frame(frames[2], 3)                 # contiguous with the old sequence, but buffered
    assert feed.counters.buffered == 1 and not feed.is_valid("NKNUSDT")
    assert feed.book_levels(0, 0) == []

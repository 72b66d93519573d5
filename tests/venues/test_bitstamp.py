"""Bitstamp: compiled parse == plain-JSON parse on every frame, books == SortedDict reference
with the microtimestamp snapshot rule, buffering before the snapshot, garbage counted."""
from __future__ import annotations

import orjson

from appliance.transport import records
from appliance.venues import bitstamp, common, recording
from tests.venues.conftest import (DATA, SESSIONS, check_books_against_reference,
                               check_every_frame_against_reference)


def test_every_recorded_frame_parses_like_the_json_reference():
    assert check_every_frame_against_reference("bitstamp") == 727


def test_books_follow_the_sortedcontainers_reference():
    feed = check_books_against_reference("bitstamp")
    assert feed.counters.errors == 0 and feed.counters.snapshots == 10
    # diffs already contained in the REST snapshots (microtimestamp not newer) are dropped
    assert feed.counters.dropped == 102


def _sess():
    sess = recording.open_session(DATA / SESSIONS["bitstamp"])
    return sess, bitstamp.load_instruments(sess.metadata, ["ethusd"])


def test_diffs_before_the_snapshot_are_buffered_then_applied_by_microtimestamp():
    sess, ins = _sess()
    feed = bitstamp.Feed(ins, common.RecordWriter.local())
    assert feed.snapshot_requests() == [("ethusd", "/api/v2/order_book/ethusd/")]
    assert feed.snapshot_requests() == []               # in flight: not asked twice
    body = next(b for url, _, b in sess.snapshots if url.endswith("/ethusd"))
    snap_mts = int(orjson.loads(body)["microtimestamp"])
    diffs = [f for _, f in recording.frames(sess.path) if b"diff_order_book_ethusd" in f and b'"event":"data"' in f][:40]
    for f in diffs:
        feed.on_frame(f, 1)
    assert feed.counters.buffered == 40 and not feed.is_valid("ethusd")
    feed.on_snapshot("ethusd", body, 2)
    assert feed.is_valid("ethusd")
    older = sum(1 for f in diffs if int(orjson.loads(f)["data"]["microtimestamp"]) <= snap_mts)
    assert older > 0 and feed.counters.dropped == older


def test_request_reconnect_event_invalidates_books_and_asks_for_resubscribe():
    sess, ins = _sess()
    feed = bitstamp.Feed(ins, common.RecordWriter.local())
    feed.snapshot_requests()
    feed.on_snapshot("ethusd", next(b for url, _, b in sess.snapshots if url.endswith("/ethusd")), 1)
    feed.on_frame(b'{"event":"bts:request_reconnect","channel":"","data":""}', 2)
    assert not feed.is_valid("ethusd") and feed.wants_resubscribe()


def test_trade_type_is_the_aggressor_side():
    sess, ins = _sess()
    feed = bitstamp.Feed(ins, common.RecordWriter.local())
    feed.on_frame(b'{"data":{"id":216000484,"amount_str":"0.93100000","price_str":"3802.93","type":1,'
                  b'"microtimestamp":"1641343709599000"},"channel":"live_trades_ethusd","event":"trade"}', 1)
    r = feed.writer.data[0].view(records.TRADE)[0]
    assert (r["side"], r["price"], r["qty"], r["trade_id"]) == (records.SIDE_SELL, 380293, 93100000, 216000484)


def test_garbage_frames_are_counted_and_never_fatal():
    sess, ins = _sess()
    feed = bitstamp.Feed(ins, common.RecordWriter.local())
    for junk in (b"", b"{", b'{"event":"data","channel":"diff_order_book_ethusd","data":{"bids":[]}}',
                 b'{"event":"data","channel":"diff_order_book_nope","data":{}}',
                 b'{"event":"trade","channel":"live_trades_ethusd","data":{"id":1,"amount_str":"1","price_str":"1.001","type":0}}'):
        feed.on_frame(junk, 1)
    assert feed.counters.errors == 5 and feed.counters.off_grid == 1


def test_subscribe_messages_cover_book_and_trades():
    _, ins = _sess()
    assert [orjson.loads(m)["data"]["channel"] for m in bitstamp.subscribe_messages(ins)] == [
        "diff_order_book_ethusd", "live_trades_ethusd"]

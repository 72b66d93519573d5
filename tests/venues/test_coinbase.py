"""Coinbase Exchange (ws-feed) and Coinbase Advanced Trade: compiled parse == plain-JSON parse
on every frame, books == SortedDict reference, trade sides, Advanced Trade sequence gaps,
garbage counted."""
from __future__ import annotations

import orjson

from appliance.transport import records
from appliance.venues import coinbase, coinbase_advanced, common, recording
from tests.venues.conftest import (DATA, SESSIONS, check_books_against_reference,
                               check_every_frame_against_reference, meta_of)


def test_exchange_every_recorded_frame_parses_like_the_json_reference():
    # 10 snapshots + 9,719 l2updates + 97 matches + 10 last_matches
    assert check_every_frame_against_reference("coinbase") == 9836


def test_exchange_books_follow_the_sortedcontainers_reference():
    feed = check_books_against_reference("coinbase")
    assert feed.counters.errors == 0 and feed.counters.trades == 97


def test_exchange_match_side_is_the_makers_so_the_aggressor_is_the_other():
    ins = coinbase.load_instruments(meta_of("coinbase"), ["SKL-USD"])
    feed = coinbase.Feed(ins, common.RecordWriter.local())
    feed.on_frame(b'{"type":"match","trade_id":5,"side":"sell","size":"10.5","price":"0.7901",'
                  b'"product_id":"SKL-USD","sequence":9}', 1)
    r = feed.writer.data[0].view(records.TRADE)[0]
    assert (r["side"], r["price"], r["qty"], r["trade_id"]) == (records.SIDE_BUY, 7901, 105, 5)


def test_exchange_update_before_snapshot_is_dropped_not_applied():
    ins = coinbase.load_instruments(meta_of("coinbase"), ["SKL-USD"])
    feed = coinbase.Feed(ins, common.RecordWriter.local())
    feed.on_frame(b'{"type":"l2update","product_id":"SKL-USD","changes":[["buy","0.7901","1548.0"]]}', 1)
    assert feed.counters.dropped == 1 and feed.book_levels(0, 0) == []


def test_exchange_garbage_frames_are_counted_and_never_fatal():
    feed = coinbase.Feed(coinbase.load_instruments(meta_of("coinbase")), common.RecordWriter.local())
    for junk in (b"", b"{", b'{"type":"l2update"}', b'{"type":"l2update","product_id":"SKL-USD","changes":[["up","1","2"]]}',
                 b'{"type":"l2update","product_id":"NOPE","changes":[]}', b'{"type":"snapshot","product_id":"SKL-USD","bids":[["1",',
                 b"\xff"):
        feed.on_frame(junk, 1)
    assert feed.counters.errors == 7


def test_exchange_subscribe_message():
    ins = coinbase.load_instruments(meta_of("coinbase"), ["SKL-USD"])
    assert orjson.loads(coinbase.subscribe_messages(ins)[0]) == {
        "type": "subscribe", "product_ids": ["SKL-USD"], "channels": ["level2", "matches", "heartbeat"]}


def test_advanced_every_recorded_frame_parses_like_the_json_reference():
    assert check_every_frame_against_reference("coinbase_advanced") == 832


def test_advanced_books_follow_the_sortedcontainers_reference():
    feed = check_books_against_reference("coinbase_advanced")
    assert feed.counters.errors == 0 and feed.counters.gaps == 0
    assert feed.counters.snapshots == 2 and feed.counters.heartbeats == 25


def test_advanced_sequence_gap_invalidates_every_book_and_asks_for_resubscribe():
    ins = coinbase_advanced.load_instruments(meta_of("coinbase_advanced"))
    feed = coinbase_advanced.Feed(ins, common.RecordWriter.local())
    lost = None
    for ev in recording.events(DATA / SESSIONS["coinbase_advanced"]):
        if ev.kind != recording.RECV:
            continue
        if lost is None and b'"l2_data"' in ev.data[:40] and b'"update"' in ev.data[:200]:
            lost = ev.data
            continue
        feed.on_frame(ev.data, int(ev.ts * 1e9))
        if lost is not None and feed.counters.gaps == 1:
            break
    assert feed.counters.gaps == 1
    assert not any(feed.valid) and feed.wants_resubscribe()


def test_advanced_garbage_frames_are_counted_and_never_fatal():
    ins = coinbase_advanced.load_instruments(meta_of("coinbase_advanced"))
    feed = coinbase_advanced.Feed(ins, common.RecordWriter.local())
    for junk in (b"", b'{"type":"error","message":"bad"}', b'{"channel":"l2_data","sequence_num":1,"events":[{"type":"update"}]}',
                 b'{"channel":"l2_data","sequence_num":2,"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","price_level":"1.001","new_quantity":"1"}]}]}',
                 b"\x00\x01"):
        feed.on_frame(junk, 1)
    assert feed.counters.errors == 5
    assert feed.counters.off_grid == 1

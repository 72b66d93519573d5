"""Kraken: compiled parse == plain-JSON parse on every recorded frame, books == SortedDict
reference, every one of the 4,269 recorded checksums verified, a wrong checksum invalidates and
asks for a resubscribe, depth truncation, garbage counted."""
from __future__ import annotations

import zlib

import numpy as np
import orjson

from appliance.transport import records, ring
from appliance.venues import common, kraken, recording, replay
from tests.venues.conftest import (DATA, SESSIONS, check_books_against_reference,
                               check_every_frame_against_reference, meta_of)


def test_every_recorded_frame_parses_like_the_json_reference():
    assert check_every_frame_against_reference("kraken") == 4279


def test_books_follow_the_sortedcontainers_reference_and_every_checksum_verifies():
    feed = check_books_against_reference("kraken")
    # 4,279 book messages = 10 snapshots + 4,269 deltas, each delta carrying a checksum
    assert feed.counters.checksums_ok == 4269
    assert feed.counters.checksums_failed == 0
    assert feed.counters.snapshots == 10
    assert feed.counters.errors == 0 and feed.counters.heartbeats == 31


def test_trade_and_ticker_sessions_parse_like_the_json_reference():
    trades = sum(len(orjson.loads(f)[1]) for _, f in recording.frames(DATA / "KRAKEN.ws.48.0")
                 if f.startswith(b"["))
    assert check_every_frame_against_reference("kraken", DATA / "KRAKEN.ws.48.0") > 0
    feed = replay.run(DATA / "KRAKEN.ws.48.0", "kraken")
    assert feed.counters.errors == 0 and feed.counters.trades == trades
    # ticker frames carry no book or trade data: no rows, nothing published but counted
    assert check_every_frame_against_reference("kraken", DATA / "KRAKEN.ws.49.0") == 0
    assert replay.run(DATA / "KRAKEN.ws.49.0", "kraken").counters.errors == 0


def _checksum_string(levels_asks, levels_bids, ins, pdec, qdec):
    """The venue's recipe, independently: printed decimals, '.' removed, leading zeros off."""
    out = ""
    for p, q in levels_asks[:10] + levels_bids[:10]:
        for v, step, dec, pr in ((p, ins.price_step, ins.price_dec, pdec), (q, ins.qty_step, ins.qty_dec, qdec)):
            s = common.from_grid(v, dec, step)
            whole, _, frac = s.partition(".")
            frac = (frac + "0" * pr)[:pr]
            out += (whole + frac).lstrip("0")
    return out


def test_compiled_crc32_matches_zlib_over_the_venue_string():
    ins = kraken.load_instruments(meta_of("kraken"), ["XBT/CHF"])
    feed = kraken.Feed(ins, common.RecordWriter.local())
    frame = next(f for _, f in recording.frames(DATA / SESSIONS["kraken"]) if b'"as"' in f and b"XBT/CHF" in f)
    feed.on_frame(frame, 1)
    want = zlib.crc32(_checksum_string(feed.book_levels(0, 1), feed.book_levels(0, 0), ins[0], 5, 8).encode())
    got = kraken.checksum(feed.px, feed.qty, feed.nb, 0, feed.st.book[0, kraken.K_SCALE:kraken.K_SCALE + 4], feed.st.scratch, kraken.CRC_TABLE)
    assert got == want


def test_wrong_checksum_invalidates_the_book_and_asks_for_resubscribe_then_snapshot_recovers():
    frames = [f for _, f in recording.frames(DATA / SESSIONS["kraken"]) if b'"SC/EUR"' in f]
    ins = kraken.load_instruments(meta_of("kraken"), ["SC/EUR"])
    feed = kraken.Feed(ins, common.RecordWriter.local())
    snap = next(f for f in frames if b'"as"' in f)
    deltas = [f for f in frames if b'"c":"' in f]
    feed.on_frame(snap, 1)
    feed.on_frame(deltas[0], 2)
    assert feed.counters.checksums_ok == 1
    bad = orjson.loads(deltas[1])
    bad[-3]["c"] = str((int(bad[-3]["c"]) + 1) % (1 << 32))
    feed.on_frame(orjson.dumps(bad), 3)
    assert feed.counters.checksums_failed == 1
    assert not feed.is_valid("SC/EUR") and feed.wants_resubscribe()
    feed.on_frame(deltas[2], 4)                     # dropped until a fresh snapshot
    assert feed.counters.dropped == 1
    feed.on_frame(snap, 5)
    assert feed.is_valid("SC/EUR")
    out = np.zeros((1 << 12, 64), np.uint8)
    m = ring.drain(feed.writer.hdr, feed.writer.data, ring.local_cursor(feed.writer.hdr), out, 1 << 12)
    st = [(int(r.view(records.BOOK_STATUS)[0]["status"]), int(r.view(records.BOOK_STATUS)[0]["reason"]))
          for r in out[:m] if r[8] == records.RT_BOOK_STATUS]
    assert st == [(records.BOOK_VALID, 0), (records.BOOK_INVALID, records.BR_CHECKSUM), (records.BOOK_VALID, 0)]


def test_book_is_truncated_to_the_subscribed_depth_with_published_deletes():
    ins = kraken.load_instruments(meta_of("kraken"), ["SC/EUR"])
    feed = kraken.Feed(ins, common.RecordWriter.local())
    feed.on_frame(b'{"channelID":1,"channelName":"book-10","event":"subscriptionStatus","pair":"SC/EUR",'
                  b'"status":"subscribed","subscription":{"depth":2,"name":"book"}}', 1)
    feed.on_frame(b'[1,{"as":[["0.05","1.0","1"],["0.06","1.0","1"]],"bs":[["0.04","1.0","1"]]},"book-2","SC/EUR"]', 2)
    feed.on_frame(b'[1,{"a":[["0.045","2.0","1"]]},"book-2","SC/EUR"]', 3)
    assert feed.book_levels(0, 1) == [(4500, 200000000), (5000, 100000000)]
    assert feed.counters.truncated == 1


def test_garbage_frames_are_counted_and_never_fatal():
    ins = kraken.load_instruments(meta_of("kraken"))
    feed = kraken.Feed(ins, common.RecordWriter.local())
    for junk in (b"", b"[", b"[1,2]", b"[1,{\"a\":[[\"x\",\"1\",\"2\"]]},\"book-10\",\"SC/EUR\"]",
                 b'[1,{"a":[]},"book-10","NOPE/EUR"]', b"{not json", b"\xff\xfe"):
        feed.on_frame(junk, 1)
    assert feed.counters.errors == 7 and feed.counters.frames == 7


def test_subscribe_messages_and_ping():
    ins = kraken.load_instruments(meta_of("kraken"), ["XBT/CHF", "SC/EUR"])
    msgs = [orjson.loads(m) for m in kraken.subscribe_messages(ins)]
    assert msgs[0] == {"event": "subscribe", "pair": ["XBT/CHF", "SC/EUR"],
                       "subscription": {"name": "book", "depth": kraken.BOOK_DEPTH}}
    assert msgs[1]["subscription"] == {"name": "trade"}
    assert orjson.loads(kraken.Feed(ins, common.RecordWriter.local()).ping_frame()) == {"event": "ping"}

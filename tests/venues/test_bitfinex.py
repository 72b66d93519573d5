"""Bitfinex: compiled parse == plain-JSON parse on every frame, books == SortedDict reference,
SEQ_ALL continuity over the whole session, an injected gap invalidates every book and asks for a
resubscribe, checksum frames verified, garbage counted."""
from __future__ import annotations

import zlib
from decimal import Decimal

import orjson

from appliance.transport import records
from appliance.venues import bitfinex, common, recording
from tests.venues.conftest import (DATA, SESSIONS, check_books_against_reference,
                               check_every_frame_against_reference, meta_of)


def test_every_recorded_frame_parses_like_the_json_reference():
    assert check_every_frame_against_reference("bitfinex") == 1600


def test_books_follow_the_sortedcontainers_reference():
    feed = check_books_against_reference("bitfinex")
    assert feed.counters.errors == 0 and feed.counters.snapshots == 7


def test_sequence_numbers_run_1_to_1670_without_a_gap():
    seqs = [orjson.loads(f)[-1] for _, f in recording.frames(DATA / SESSIONS["bitfinex"]) if f.startswith(b"[")]
    assert seqs == list(range(1, 1671))
    feed = bitfinex.Feed(bitfinex.load_instruments(meta_of("bitfinex")), common.RecordWriter.local())
    for ts, f in recording.frames(DATA / SESSIONS["bitfinex"]):
        feed.on_frame(f, int(ts * 1e9))
    assert feed.counters.gaps == 0 and feed.last_seq == 1670 and feed.counters.heartbeats == 42


def _feed_session(drop_seq=None):
    feed = bitfinex.Feed(bitfinex.load_instruments(meta_of("bitfinex")), common.RecordWriter.local())
    for ts, f in recording.frames(DATA / SESSIONS["bitfinex"]):
        if drop_seq is not None and f.startswith(b"[") and orjson.loads(f)[-1] == drop_seq:
            continue
        feed.on_frame(f, int(ts * 1e9))
    return feed


def test_injected_sequence_gap_invalidates_every_book_and_requests_resubscribe():
    feed = _feed_session(drop_seq=1000)
    assert feed.counters.gaps == 1
    assert not any(feed.valid)
    assert feed.wants_resubscribe()
    # deltas after the gap are not applied to the untrusted books
    assert feed.counters.dropped > 0


def test_resubscribe_after_gap_rebuilds_books_from_new_snapshots():
    feed = _feed_session(drop_seq=1000)
    feed.on_disconnect()
    feed.on_reconnect()
    frames = list(recording.frames(DATA / SESSIONS["bitfinex"]))
    for ts, f in frames:
        feed.on_frame(f, int(ts * 1e9))          # the same session again: a fresh connection
    ref = _feed_session()
    assert all(feed.valid)
    for b in range(len(feed.instruments)):
        assert feed.book_levels(b, 0) == ref.book_levels(b, 0)
        assert feed.book_levels(b, 1) == ref.book_levels(b, 1)


def _js(v: Decimal) -> str:
    """How JavaScript prints a number (shortest form, exponent below 1e-6)."""
    v = v.normalize()
    if v != 0 and abs(v) < Decimal("1e-6"):
        s = f"{v:e}"
        mant, exp = s.split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    s = f"{v:f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def test_checksum_frame_is_verified_against_the_book():
    ins = bitfinex.load_instruments(meta_of("bitfinex"), ["tMNABTC"])
    feed = bitfinex.Feed(ins, common.RecordWriter.local())
    feed.on_frame(b'{"event":"subscribed","channel":"book","chanId":7,"symbol":"tMNABTC","prec":"P0"}', 0)
    levels = [("0.00002503", 1, "100.5"), ("0.000025", 2, "3"), ("0.0000001", 1, "7"),
              ("0.00002526", 1, "-50"), ("0.0000253", 3, "-0.12345678")]
    snap = "[7,[" + ",".join(f"[{p},{c},{a}]" for p, c, a in levels) + "],1]"
    feed.on_frame(snap.encode(), 1)
    bids = [l for l in levels if not l[2].startswith("-")]
    asks = [l for l in levels if l[2].startswith("-")]
    bids.sort(key=lambda l: -Decimal(l[0]))
    asks.sort(key=lambda l: Decimal(l[0]))
    parts = []
    for k in range(25):
        if k < len(bids):
            parts += [_js(Decimal(bids[k][0])), _js(Decimal(bids[k][2]))]
        if k < len(asks):
            parts += [_js(Decimal(asks[k][0])), _js(Decimal(asks[k][2]))]
    crc = zlib.crc32(":".join(parts).encode())
    crc = crc - (1 << 32) if crc >= 1 << 31 else crc
    feed.on_frame(f'[7,"cs",{crc},2]'.encode(), 2)
    assert feed.counters.checksums_ok == 1
    feed.on_frame(f'[7,"cs",{crc + 1},3]'.encode(), 3)
    assert feed.counters.checksums_failed == 1 and not feed.is_valid("tMNABTC")
    assert feed.wants_resubscribe()


def test_trade_frames_publish_the_aggressor_side_and_updates_are_not_duplicated():
    ins = bitfinex.load_instruments(meta_of("bitfinex"), ["tMNABTC"])
    feed = bitfinex.Feed(ins, common.RecordWriter.local())
    feed.on_frame(b'{"event":"subscribed","channel":"trades","chanId":9,"symbol":"tMNABTC"}', 0)
    feed.on_frame(b'[9,"te",[670002571,1618677535660,-76.7682617,0.00002516],1]', 1)
    feed.on_frame(b'[9,"tu",[670002571,1618677535660,-76.7682617,0.00002516],2]', 2)
    assert feed.counters.trades == 1
    r = feed.writer.data[0].view(records.TRADE)[0]
    assert (r["rtype"], r["side"], r["trade_id"], r["qty"], r["price"]) == (
        records.RT_TRADE, records.SIDE_SELL, 670002571, 7676826170, 251600)


def test_garbage_frames_are_counted_and_never_fatal():
    feed = bitfinex.Feed(bitfinex.load_instruments(meta_of("bitfinex")), common.RecordWriter.local())
    for junk in (b"", b"[", b"[1,", b"[x,1]", b'{"event":', b"\x00"):
        feed.on_frame(junk, 1)
    assert feed.counters.errors == 6

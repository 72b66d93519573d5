"""Offline replay of a recorded venue session: ``appliance md replay PATH --venue NAME [--json]``.

Runs a recorded WebSocket session (``X.ws.N.0`` or ``X.jsonl.zst``) through the venue's own
parse + book-sync code (the same ``Feed`` the gateway runs) with no network, into a private
in-process md ring, then prints the counters and every instrument's final top-10 book.

The venue metadata and REST snapshots come from the recording's sibling files (``X.0``,
``X.http.N.0``) or, for ``.jsonl.zst``, from the http events of the same file. A recorded
snapshot is handed to the feed at its recorded time if the feed has asked for it (by REST path);
every frame's ``recv_tsc`` is its recorded receive time in ns.

``--json`` prints one object::

    {"frames":N,"errors":N,"gaps":N,"resyncs":N,"checksums_ok":N,"checksums_failed":N,
     "books":{"<venue symbol>":{"bids":[["price","qty"],...],"asks":[...]}}}
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

from appliance.venues import common, recording, registry

JSON_KEYS = ("frames", "errors", "gaps", "resyncs", "checksums_ok", "checksums_failed")


def venue_module(name: str):
    return registry.module(name)


def _path_of(url: str) -> str:
    u = urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


def run(path: str | Path, venue: str, ring_capacity: int = 1 << 16,
        symbols: list[str] | None = None, on_frame_hook=None):
    """Replay a recording; returns the Feed (its counters, books and writer are inspectable).

    ``on_frame_hook(feed, ts, frame) -> bytes | None`` may rewrite or drop (None) frames
    (tests inject gaps and garbage with it)."""
    mod = venue_module(venue)
    sess = recording.open_session(path)
    instruments = mod.load_instruments(sess.metadata, symbols)
    writer = common.RecordWriter.local(ring_capacity)
    feed = mod.Feed(instruments, writer)
    snaps = sess.snapshots
    si = 0
    pending: dict[str, str] = {}          # REST path -> symbol
    connected = False

    def collect():
        for sym, p in feed.snapshot_requests():
            pending[p] = sym

    collect()
    for ev in sess.events():
        if ev.kind == recording.CONNECT:
            if connected:
                feed.on_disconnect()
                feed.on_reconnect()
            connected = True
            continue
        if ev.kind != recording.RECV:
            continue
        tsc = int(round(ev.ts * 1e9))
        while si < len(snaps) and snaps[si][1] <= ev.ts:
            url, sts, body = snaps[si]
            si += 1
            sym = pending.pop(_path_of(url), None)
            if sym is not None:
                feed.on_snapshot(sym, body, int(round(sts * 1e9)))
                collect()
        frame = ev.data
        if on_frame_hook is not None:
            frame = on_frame_hook(feed, ev.ts, frame)
            if frame is None:
                continue
        feed.on_frame(frame, tsc)
        collect()
        feed.wants_resubscribe()      # no venue to resubscribe to: the request is dropped
    # snapshots recorded after the last frame
    while si < len(snaps):
        url, sts, body = snaps[si]
        si += 1
        sym = pending.pop(_path_of(url), None)
        if sym is not None:
            feed.on_snapshot(sym, body, int(round(sts * 1e9)))
    return feed


def result(feed, depth: int = 10) -> dict:
    c = feed.counters.as_dict()
    out = {k: c[k] for k in JSON_KEYS}
    out["books"] = {ins.symbol: feed.top(ins.symbol, depth) for ins in feed.instruments}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="appliance md replay",
                                 description="Replay a recorded venue session through the parsers "
                                             "and book sync; print counters and top-10 books.")
    ap.add_argument("path", help="recorded WebSocket session: X.ws.N.0 or X.jsonl.zst")
    ap.add_argument("--venue", required=True, choices=registry.VENUES)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--depth", type=int, default=10, help="book levels to print (default 10)")
    args = ap.parse_args(argv)
    try:
        feed = run(args.path, args.venue)
    except (recording.RecordingError, common.InstrumentError, OSError) as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    res = result(feed, args.depth)
    if args.json:
        import orjson
        sys.stdout.write(orjson.dumps(res).decode() + "\n")
        return 0
    print(f"{args.venue}: {args.path}")
    for k, v in feed.counters.as_dict().items():
        print(f"  {k:<18}{v}")
    for sym, bk in res["books"].items():
        valid = "valid" if feed.is_valid(sym) else "INVALID"
        print(f"\n{sym} ({valid})")
        print(f"  {'bid qty':>18} {'bid':>16} | {'ask':<16} {'ask qty':<18}")
        for k in range(max(len(bk["bids"]), len(bk["asks"]))):
            bp, bq = bk["bids"][k] if k < len(bk["bids"]) else ("", "")
            ap_, aq = bk["asks"][k] if k < len(bk["asks"]) else ("", "")
            print(f"  {bq:>18} {bp:>16} | {ap_:<16} {aq:<18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

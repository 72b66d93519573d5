"""Offline replay of a recorded venue session: ``appliance md replay PATH --venue NAME [--json]``.

Runs a recorded WebSocket session (``X.ws.N.0`` or ``X.jsonl.zst``) through the venue's own
parse + book-sync code (the same ``Feed`` the gateway runs) with no network, into a private
in-process md ring, then prints the counters and every instrument's final top-10 book.

The venue metadata and REST snapshots come from the recording's sibling files (``X.0``,
``X.http.N.0``) or, for ``.jsonl.zst``, from the http events of the same file. A recorded REST
response is a book snapshot when the venue module's ``snapshot_symbol(url)`` recognises its URL
(every documented form of the venue's REST API: versions, hosts, query orders); it is handed to
the feed at its recorded time if the feed is waiting for that symbol's snapshot. Every frame's
``recv_tsc`` is its recorded receive time in ns.

Never success on nothing: a book that was never valid is reported with the reason
(``never_synced``) and counted in ``errors``; ``--strict`` exits 1 when any book never synced or
any gap, resync or error occurred.

``--json`` prints one object::

    {"frames":N,"errors":N,"gaps":N,"resyncs":N,"checksums_ok":N,"checksums_failed":N,
     "snapshots_used":N,"snapshots_unused":N,"never_synced":{"<symbol>":"<reason>"},
     "books":{"<venue symbol>":{"bids":[["price","qty"],...],"asks":[...]}}}
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.venues import common, recording, registry

JSON_KEYS = ("frames", "errors", "gaps", "resyncs", "checksums_ok", "checksums_failed")


def venue_module(name: str):
    return registry.module(name)


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
    pending: set[str] = set()             # symbols whose snapshot the feed asked for
    used = [0, 0]
    connected = False

    def collect():
        for sym, _ in feed.snapshot_requests():
            pending.add(sym)

    def offer(url, sts, body):
        sym = mod.snapshot_symbol(url)
        if sym is not None and sym not in feed.index:
            # the URL may name the symbol in another case than the stream does
            sym = next((s for s in feed.index if s.upper() == sym.upper()), sym)
        if sym in pending:
            pending.discard(sym)
            used[0] += 1
            feed.on_snapshot(sym, body, int(round(sts * 1e9)))
            collect()
        else:
            used[1] += 1

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
            offer(*snaps[si])
            si += 1
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
        offer(*snaps[si])
        si += 1
    feed.replay_snapshots = {"used": used[0], "unused": used[1]}
    return feed


def result(feed, depth: int = 10) -> dict:
    """Counters, snapshot use, never-synced books (each counted as an error) and the books."""
    c = feed.counters.as_dict()
    out = {k: c[k] for k in JSON_KEYS}
    never = feed.never_synced()
    out["errors"] += len(never)
    snaps = getattr(feed, "replay_snapshots", {"used": 0, "unused": 0})
    out["snapshots_used"] = snaps["used"]
    out["snapshots_unused"] = snaps["unused"]
    out["never_synced"] = never
    out["books"] = {ins.symbol: feed.top(ins.symbol, depth) for ins in feed.instruments}
    return out


def failed(res: dict) -> list[str]:
    """Why a replay is not a success under --strict (empty: it is)."""
    why = [f"book {s} never synced ({r})" for s, r in res["never_synced"].items()]
    for k in ("gaps", "resyncs", "checksums_failed"):
        if res[k]:
            why.append(f"{k} {res[k]}")
    n_bad = res["errors"] - len(res["never_synced"])
    if n_bad:
        why.append(f"errors {n_bad}")
    return why


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="appliance md replay",
                                 description="Replay a recorded venue session through the parsers "
                                             "and book sync; print counters and top-10 books.")
    ap.add_argument("path", help="recorded WebSocket session: X.ws.N.0 or X.jsonl.zst")
    ap.add_argument("--venue", required=True, choices=registry.VENUES)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--depth", type=int, default=10, help="book levels to print (default 10)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 if any book never synced or any gap, resync or error occurred")
    args = ap.parse_args(argv)
    try:
        feed = run(args.path, args.venue)
    except (recording.RecordingError, common.InstrumentError, OSError) as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    res = result(feed, args.depth)
    why = failed(res)
    rc = 1 if args.strict and why else 0
    if args.json:
        import orjson
        sys.stdout.write(orjson.dumps(res).decode() + "\n")
        if rc:
            print(f"replay --strict: {'; '.join(why)}", file=sys.stderr)
        return rc
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
    for sym, why_ in res["never_synced"].items():
        print(f"\nERROR: book {sym} never synced ({why_})")
    if rc:
        print(f"replay --strict: {'; '.join(why)}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

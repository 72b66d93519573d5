"""``appliance journal stats|cat`` and ``appliance recorder``.

* ``appliance recorder [--rings md.binance,orders,...] [--dir DIR]``: journal rings until SIGTERM
  or SIGINT, then drain, flush, END every file and exit 0. Default rings: ``md.<venue>`` for every
  enabled venue of the config plus ``orders`` and ``exec``; default directory:
  ``appliance.journal_dir``; zstd level, frame size and rotation from the ``[journal]`` section;
  pinned to ``cores.actors.recorder`` when the core plan names one.
* ``appliance journal stats PATH|DIR [--ring R] [--json]``: files, frames, records, first/last
  sequence, gaps with lost counts, truncation/corruption status, compression ratio (every payload
  crc is checked). Exit 0 if every frame is intact, 1 if a file is truncated or a frame corrupt,
  2 if the path is not a journal.
* ``appliance journal cat PATH|DIR [--ring R] [--from-seq S] [--limit N] [--json]``: records decoded
  with ``records.RECORD_DTYPES`` by record type (JSON: one object per line).
"""
from __future__ import annotations

import logging
import sys

from appliance.cli import positive_int

log = logging.getLogger("appliance.recorder")


def register(sub) -> None:
    p = sub.add_parser("journal", help="inspect journal files (stats, cat)",
                       description="Inspect the recorder's journal files.")
    jsub = p.add_subparsers(dest="journal_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    s = jsub.add_parser("stats", help="files, frames, records, gaps, truncation, compression")
    s.add_argument("path", nargs="+", help="journal file(s) or directory")
    s.add_argument("--ring", help="only this ring (default: every ring found)")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.add_argument("--no-verify", action="store_true",
                   help="read frame headers only (skip payload crc checks)")
    s.set_defaults(handler=cmd_stats)

    c = jsub.add_parser("cat", help="print decoded records")
    c.add_argument("path", nargs="+", help="journal file(s) or directory")
    c.add_argument("--ring", help="ring to print (required if the journal holds several)")
    c.add_argument("--from-seq", type=int, default=None, help="start at this ring sequence")
    c.add_argument("--limit", type=int, default=None, help="print at most N records")
    c.add_argument("--json", action="store_true", help="one JSON object per record per line")
    c.set_defaults(handler=cmd_cat)

    r = sub.add_parser("recorder", help="journal rings to zstd files until SIGTERM/SIGINT",
                       description="Attach to rings as consumer 'recorder' and journal them.")
    r.add_argument("--rings", help="comma-separated ring names (default: md.<venue> for every "
                   "enabled venue, orders, exec)")
    r.add_argument("--dir", help="journal directory (default: appliance.journal_dir)")
    r.add_argument("--shm-dir", help="shared-memory directory of the rings")
    r.add_argument("--flush-ms", type=positive_int, default=200,
                   help="write a partial frame after this long without a full one (default 200)")
    r.set_defaults(handler=cmd_recorder)


def _err(msg: str) -> int:
    print(f"appliance journal: {msg}", file=sys.stderr)
    return 2


# --- stats --------------------------------------------------------------------------------------
def cmd_stats(args) -> int:
    from appliance.journal import Journal, JournalError
    try:
        j = Journal(args.path)
        rings = [args.ring] if args.ring else j.rings()
        out = [j.stats(ring, verify=not args.no_verify) for ring in rings]
    except JournalError as e:
        return _err(str(e))
    bad = any(s["truncated_files"] or s["corrupt_frames"] for s in out)
    if args.json:
        import orjson
        sys.stdout.buffer.write(orjson.dumps({"rings": out, "ok": not bad}) + b"\n")
    else:
        for s in out:
            _print_stats(s)
    return 1 if bad else 0


def _fmt_seq(v) -> str:
    return "-" if v is None else str(v)


def _print_stats(s: dict) -> None:
    ratio = "-" if s["compression_ratio"] is None else f"{s['compression_ratio']:.2f}x"
    print(f"ring {s['ring']}: record size {s['record_size']} B, {s['n_files']} file(s), "
          f"{s['frames']} frames, {s['records']} records, seq {_fmt_seq(s['first_seq'])}.."
          f"{_fmt_seq(s['last_seq'])}")
    print(f"  lost (recorder lapped): {s['lost']} in {sum(g['kind'] == 'lapped' for g in s['gaps'])} "
          f"gap(s); unrecorded: {s['unrecorded']}; sequence resets: {s['resets']}")
    print(f"  {s['uncompressed_bytes']} B of records in {s['compressed_bytes']} B compressed "
          f"({ratio}); {s['disk_bytes']} B on disk")
    print(f"  truncated files: {s['truncated_files']}, corrupt frames: {s['corrupt_frames']}, "
          f"files not closed: {s['open_files']}")
    print(f"  {'file':<56} {'status':<10} {'frames':>7} {'records':>10} {'first':>12} {'last':>12}")
    for f in s["files"]:
        name = f["path"].rsplit("/", 1)[-1]
        print(f"  {name:<56} {f['status']:<10} {f['frames']:>7} {f['records']:>10} "
              f"{_fmt_seq(f['first_seq']):>12} {_fmt_seq(f['last_seq']):>12}")
        for p in f["problems"]:
            print(f"    ! {p}")
    for g in s["gaps"]:
        print(f"  gap ({g['kind']}): {g['count']} records from seq {g['first_seq']} "
              f"to {g['first_seq'] + g['count'] - 1}")


# --- cat ----------------------------------------------------------------------------------------
def _value(v):
    if isinstance(v, bytes):
        return v.rstrip(b"\0").decode(errors="replace")
    return v.item() if hasattr(v, "item") else v


def record_dicts(rows):
    """Decoded records of one batch (uint8[n, record_size]) as dicts, in order."""
    from appliance.transport import records as R
    from appliance.journal import decode_records
    out = [None] * rows.shape[0]
    for rt, (idx, arr) in decode_records(rows).items():
        name = R.RTYPE_NAMES.get(rt, f"UNKNOWN_{rt}")
        for k, i in enumerate(idx.tolist()):
            d = {"seq": int(R.record_seqs(rows[i])), "type": name}
            if arr is None:
                d["raw"] = rows[i].tobytes().hex()
            else:
                rec = arr[k]
                for f in arr.dtype.names:
                    if f != "ver":
                        d[f] = _value(rec[f])
                if "venue" in d:
                    d["venue"] = R.VENUE_NAMES.get(d["venue"], d["venue"])
            out[i] = d
    return out


def cmd_cat(args) -> int:
    from appliance.journal import Journal, JournalError
    if args.limit is not None and args.limit < 0:
        return _err("--limit must be >= 0")
    left = args.limit
    try:
        j = Journal(args.path)
        if left == 0:
            return 0
        if args.json:
            import orjson
            write = sys.stdout.buffer.write
            for rows in j.batches(args.from_seq, args.ring):
                if left is not None:
                    rows = rows[:left]
                for d in record_dicts(rows):
                    write(orjson.dumps(d) + b"\n")
                if left is not None:
                    left -= rows.shape[0]
                    if left <= 0:
                        break
        else:
            for rows in j.batches(args.from_seq, args.ring):
                if left is not None:
                    rows = rows[:left]
                for d in record_dicts(rows):
                    print(" ".join(f"{k}={v}" for k, v in d.items()))
                if left is not None:
                    left -= rows.shape[0]
                    if left <= 0:
                        break
    except JournalError as e:
        return _err(str(e))
    except BrokenPipeError:
        return 0
    if j.corrupt_frames:
        print(f"appliance journal: skipped {j.corrupt_frames} corrupt frame(s)", file=sys.stderr)
        return 1
    return 0


# --- recorder -----------------------------------------------------------------------------------
def default_rings(cfg) -> list[str]:
    """Every ring of the configured appliance: md.<venue>, orders, each FIX session's exec ring."""
    from appliance.fix.gateway import _sessions, load_session_config
    execs = [load_session_config(cfg, name).exec_ring for name in _sessions(cfg)]
    return [f"md.{v.name}" for v in cfg.venues if v.enabled] + ["orders"] + (execs or ["exec"])


def cmd_recorder(args) -> int:
    from appliance import config as config_mod
    from appliance.journal import JournalError
    from appliance.journal.recorder import RecorderActor
    try:
        cfg = config_mod.load(args.config)
        rings = ([r.strip() for r in args.rings.split(",") if r.strip()] if args.rings
                 else default_rings(cfg))
        actor = RecorderActor(cfg, rings, args.dir or cfg.appliance.journal_dir,
                              shm_dir=args.shm_dir, flush_ms=args.flush_ms)
    except (config_mod.ConfigError, JournalError, ValueError, OSError) as e:
        print(f"appliance recorder: {e}", file=sys.stderr)
        return 2
    log.info("recorder: rings %s -> %s", ", ".join(rings), actor.rec.journal_dir)
    return actor.run()


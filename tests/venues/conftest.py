"""Reference implementations for the venue tests, written independently of the compiled code:
a plain-JSON parse of every frame (stdlib json with Decimal numbers) into the rows the compiled
parsers must produce, and a SortedDict reference book driven by those parses."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from sortedcontainers import SortedDict

from appliance import data
from appliance.transport import records
from appliance.venues import common, recording

DATA = data.DIR / "venues"
BUY, SELL = records.SIDE_BUY, records.SIDE_SELL
L2, TRADE, BBO = common.K_L2, common.K_TRADE, common.K_BBO

SESSIONS = {
    "binance": "BINANCE.ws.1.0",
    "coinbase": "COINBASE.ws.28.0",
    "coinbase_advanced": "COINBASE_ADVANCED.jsonl.zst",
    "kraken": "KRAKEN.ws.50.0",
    "bitstamp": "BITSTAMP.ws.1.0",
    "bitfinex": "BITFINEX.ws.11.0",
}


def jloads(frame: bytes):
    return json.loads(frame, parse_float=Decimal, parse_int=Decimal)


def ticks(ins: common.Instrument, v) -> int:
    return common.to_grid(str(v), ins.price_dec, ins.price_step)


def lots(ins: common.Instrument, v) -> int:
    return common.to_grid(str(v), ins.qty_dec, ins.qty_step)


def row(kind, inst, side, p, q, seq=0, a1=0, a2=0):
    return (kind, inst, side, p, q, int(seq), int(a1), int(a2))


# --- reference parsers: frame -> list of rows (same order as the compiled parser) -------------

def ref_binance(frame, idx, ins):
    d = jloads(frame)
    data = d.get("data", d)
    if "s" not in data or data["s"] not in idx:
        return None
    i = idx[data["s"]]
    g = ins[i]
    e = data.get("e")
    if e is None:
        return [row(BBO, i, 0, ticks(g, data["b"]), lots(g, data["B"]), data["u"],
                    ticks(g, data["a"]), lots(g, data["A"]))]
    if e == "depthUpdate":
        return ([row(L2, i, BUY, ticks(g, p), lots(g, q), data["u"]) for p, q in data["b"]] +
                [row(L2, i, SELL, ticks(g, p), lots(g, q), data["u"]) for p, q in data["a"]])
    if e in ("aggTrade", "trade"):
        tid = data["a"] if e == "aggTrade" else data["t"]
        return [row(TRADE, i, SELL if data["m"] else BUY, ticks(g, data["p"]), lots(g, data["q"]), tid)]
    return []


def ref_kraken(frame, idx, ins):
    d = jloads(frame)
    if isinstance(d, dict):
        return []
    i = idx[d[-1]]
    g = ins[i]
    out = []
    if d[-2].startswith("book"):
        for obj in d[1:-2]:
            for k, v in obj.items():
                if k in ("a", "as", "b", "bs"):
                    side = SELL if k[0] == "a" else BUY
                    out += [row(L2, i, side, ticks(g, lv[0]), lots(g, lv[1])) for lv in v]
        return out
    if d[-2] == "trade":
        return [row(TRADE, i, BUY if t[3] == "b" else SELL, ticks(g, t[0]), lots(g, t[1]))
                for t in d[1]]
    return []


class RefBitfinex:
    def __init__(self, idx, ins):
        self.idx, self.ins, self.chans = idx, ins, {}

    def __call__(self, frame, idx=None, ins=None):
        d = jloads(frame)
        if isinstance(d, dict):
            if d.get("event") == "subscribed" and d["symbol"] in self.idx:
                self.chans[int(d["chanId"])] = (self.idx[d["symbol"]], d["channel"])
            return []
        chan, seq = int(d[0]), int(d[-1])
        if chan not in self.chans or d[1] == "hb":
            return []
        i, kind = self.chans[chan]
        g = self.ins[i]
        if kind == "trades":
            if d[1] == "te":
                _, _, a, p = d[2]
                return [row(TRADE, i, BUY if a > 0 else SELL, ticks(g, p), lots(g, abs(a)), d[2][0])]
            return []
        if kind != "book":
            return []
        entries = d[1] if d[1] and isinstance(d[1][0], list) else [d[1]]
        return [row(L2, i, BUY if a > 0 else SELL, ticks(g, p), 0 if c == 0 else lots(g, abs(a)), seq, c)
                for p, c, a in entries]


def ref_coinbase(frame, idx, ins):
    d = jloads(frame)
    t = d.get("type")
    if t not in ("l2update", "snapshot", "match", "last_match"):
        return []
    i = idx[d["product_id"]]
    g = ins[i]
    if t == "l2update":
        return [row(L2, i, BUY if s == "buy" else SELL, ticks(g, p), lots(g, q)) for s, p, q in d["changes"]]
    if t == "snapshot":
        return ([row(L2, i, BUY, ticks(g, p), lots(g, q)) for p, q in d["bids"]] +
                [row(L2, i, SELL, ticks(g, p), lots(g, q)) for p, q in d["asks"]])
    return [row(TRADE, i, BUY if d["side"] == "sell" else SELL, ticks(g, d["price"]),
                lots(g, d["size"]), d["trade_id"])]


def ref_bitstamp(frame, idx, ins):
    d = jloads(frame)
    ev, ch = d.get("event"), d.get("channel", "")
    if ev == "data" and ch.startswith("diff_order_book_"):
        i = idx[ch[len("diff_order_book_"):]]
        g = ins[i]
        m = int(d["data"]["microtimestamp"])
        return ([row(L2, i, BUY, ticks(g, p), lots(g, q), m) for p, q in d["data"]["bids"]] +
                [row(L2, i, SELL, ticks(g, p), lots(g, q), m) for p, q in d["data"]["asks"]])
    if ev == "trade" and ch.startswith("live_trades_"):
        i = idx[ch[len("live_trades_"):]]
        g = ins[i]
        t = d["data"]
        return [row(TRADE, i, BUY if t["type"] == 0 else SELL, ticks(g, t["price_str"]),
                    lots(g, t["amount_str"]), t["id"])]
    return []


def ref_coinbase_advanced(frame, idx, ins):
    d = jloads(frame)
    ch = d.get("channel")
    seq = d.get("sequence_num", 0)
    out = []
    if ch == "l2_data":
        for ev in d["events"]:
            i = idx[ev["product_id"]]
            g = ins[i]
            out += [row(L2, i, BUY if u["side"] == "bid" else SELL, ticks(g, u["price_level"]),
                        lots(g, u["new_quantity"]), seq) for u in ev["updates"]]
    elif ch == "market_trades":
        for ev in d["events"]:
            if ev["type"] != "update":
                continue
            for t in ev["trades"]:
                if t["product_id"] not in idx:
                    continue
                i = idx[t["product_id"]]
                g = ins[i]
                out.append(row(TRADE, i, BUY if t["side"] == "BUY" else SELL, ticks(g, t["price"]),
                               lots(g, t["size"]), t["trade_id"]))
    return out


REF_PARSERS = {"binance": ref_binance, "kraken": ref_kraken, "coinbase": ref_coinbase,
               "bitstamp": ref_bitstamp, "coinbase_advanced": ref_coinbase_advanced}


def ref_parser(venue, idx, ins):
    if venue == "bitfinex":
        return RefBitfinex(idx, ins)
    return REF_PARSERS[venue]


def compiled_rows(feed, frame: bytes):
    """Run the venue's compiled parse_frame exactly as its Feed does; returns (rc, rows, info)."""
    import importlib
    mod = importlib.import_module(type(feed).__module__)
    buf = np.frombuffer(frame, np.uint8)
    if feed.NAME == "bitfinex":
        rc = mod.parse_frame(buf, len(buf), feed.st.tab, feed.rows, feed.info)
    else:
        rc = mod.parse_frame(buf, len(buf), feed.syms, feed.sym_lens, feed.grids, feed.rows, feed.info)
    n = int(feed.info[mod.I_NROWS])
    return rc, [tuple(int(x) for x in r) for r in feed.rows[:n]], feed.info


def check_every_frame_against_reference(venue: str, path: Path | None = None) -> int:
    """Replay a session; before the feed sees each frame, its compiled parse must equal the
    plain-JSON reference parse (frames the reference finds nothing in must give no rows either).
    Returns the number of frames that produced rows."""
    from appliance.venues import replay
    checked = [0]
    state = {}

    def hook(feed, ts, frame):
        if "ref" not in state:
            state["ref"] = ref_parser(venue, feed.index, feed.instruments)
        want = state["ref"](frame, feed.index, feed.instruments)
        rc, got, _ = compiled_rows(feed, frame)
        assert rc == 0, (rc, frame[:200])
        if want is not None:
            assert got == want, frame[:300]
            checked[0] += bool(want)
        return frame

    replay.run(path or DATA / SESSIONS[venue], venue, on_frame_hook=hook)
    return checked[0]


# --- SortedDict reference book -----------------------------------------------------------------

class RefBooks:
    """bids/asks per instrument as SortedDict(price ticks -> lots)."""

    def __init__(self, n):
        self.books = [(SortedDict(), SortedDict()) for _ in range(n)]

    def reset(self, i):
        self.books[i] = (SortedDict(), SortedDict())

    def apply(self, rows):
        for kind, i, side, p, q, *_ in rows:
            if kind != L2:
                continue
            sd = self.books[i][0 if side == BUY else 1]
            if q == 0:
                sd.pop(p, None)
            else:
                sd[p] = q

    def levels(self, i, side, depth=None):
        """(price, qty) best first; all levels or the best ``depth``."""
        items = self.books[i][side].items()
        if side == 0:
            sel = items[-depth:] if depth else items[:]
            return list(reversed(sel))
        return list(items[:depth] if depth else items[:])


def feed_top(feed, i, side, depth):
    from appliance.engine import book
    m = min(depth, int(feed.nb[i, side]))
    return [tuple(int(x) for x in book.level(feed.px, feed.qty, feed.nb, i, side, k)) for k in range(m)]


def assert_books_equal(feed, ref: RefBooks, only_valid: bool = True):
    for i, ins in enumerate(feed.instruments):
        if only_valid and not feed.valid[i]:
            continue
        for side in (0, 1):
            assert feed.book_levels(i, side) == ref.levels(i, side), (ins.symbol, side)


@pytest.fixture
def data_dir() -> Path:
    return DATA


def meta_of(venue: str) -> bytes:
    return recording.open_session(DATA / SESSIONS[venue]).metadata


def _snapshot_inst(venue, frame, parser_rows):
    """Instrument whose book this frame rebuilds from scratch (stream snapshots), or None."""
    if not parser_rows:
        return None
    d = jloads(frame)
    i = parser_rows[0][1]
    if venue == "kraken":
        return i if any(k in obj for obj in d[1:-2] for k in ("as", "bs")) else None
    if venue == "coinbase":
        return i if d.get("type") == "snapshot" else None
    if venue == "coinbase_advanced":
        return i if d.get("channel") == "l2_data" and d["events"][0]["type"] == "snapshot" else None
    if venue == "bitfinex":
        return i if isinstance(d[1], list) and d[1] and isinstance(d[1][0], list) else None
    return None


def check_books_against_reference(venue: str, top_depth: int = 10):
    """Replay a session while a SortedDict reference book follows the same frames with the
    venue's documented sync rule; after every frame the feed's valid books' top levels equal the
    reference, and at the end every level of every book does. Returns the feed."""
    from appliance.venues import replay
    sess = recording.open_session(DATA / SESSIONS[venue])
    st = {}

    def setup(feed):
        st["ref"] = RefBooks(len(feed.instruments))
        st["parse"] = ref_parser(venue, feed.index, feed.instruments)
        # REST snapshots (Binance, Bitstamp): first recorded one per symbol, by time
        st["snaps"] = []
        seen = set()
        for url, ts, body in sess.snapshots:
            for sym, i in feed.index.items():
                key = f"symbol={sym}&" if venue == "binance" else f"/order_book/{sym}"
                if key in url + "&" and i not in seen:
                    seen.add(i)
                    st["snaps"].append((ts, i, body))
        st["synced"] = {}          # inst -> last applied id (snapshot id, then u / mts)
        st["buffer"] = {i: [] for i in range(len(feed.instruments))}

    def ref_apply_delta(i, rows):
        first = rows[0][5]
        if venue == "binance":
            U, u = st["U"], first
            last = st["synced"][i]
            if u <= last:
                return
            assert U <= last + 1, ("gap in recorded data", i, U, last)
        elif rows[0][5] <= st["synced"][i]:
            return
        st["ref"].apply(rows)
        st["synced"][i] = rows[0][5]

    def deliver(ts):
        while st["snaps"] and st["snaps"][0][0] <= ts:
            _, i, body = st["snaps"].pop(0)
            d = jloads(body)
            g = feed_.instruments[i]
            st["ref"].reset(i)
            st["ref"].apply([row(L2, i, BUY, ticks(g, p), lots(g, q)) for p, q, *_ in d["bids"]] +
                            [row(L2, i, SELL, ticks(g, p), lots(g, q)) for p, q, *_ in d["asks"]])
            st["synced"][i] = int(d["lastUpdateId"] if venue == "binance" else d["microtimestamp"])
            for rows, U in st["buffer"][i]:
                st["U"] = U
                ref_apply_delta(i, rows)
            st["buffer"][i] = []

    def compare(feed, only=None):
        for i in (range(len(feed.instruments)) if only is None else (only,)):
            if not feed.valid[i]:
                continue
            for side in (0, 1):
                got = feed_top(feed, i, side, top_depth)
                want = st["ref"].levels(i, side, top_depth)
                assert got == want, (feed.instruments[i].symbol, side)

    feed_ = None

    def hook(feed, ts, frame):
        nonlocal feed_
        if not st:
            feed_ = feed
            setup(feed)
        if venue in ("binance", "bitstamp"):
            deliver(ts)
        rows = st["parse"](frame, feed.index, feed.instruments)
        l2 = [r for r in rows or [] if r[0] == L2]
        if not l2:
            return frame
        i = l2[0][1]
        compare(feed, i)        # the book this frame changes, as it stands before the frame
        if venue in ("binance", "bitstamp"):
            U = int(jloads(frame)["data"]["U"]) if venue == "binance" else 0
            if i in st["synced"]:
                st["U"] = U
                ref_apply_delta(i, l2)
            else:
                st["buffer"][i].append((l2, U))
            return frame
        snap = _snapshot_inst(venue, frame, l2)
        if snap is not None:
            st["ref"].reset(snap)
        st["ref"].apply(l2)
        return frame

    feed = replay.run(DATA / SESSIONS[venue], venue, on_frame_hook=hook)
    if venue in ("binance", "bitstamp"):
        deliver(float("inf"))
    compare(feed)
    for i in range(len(feed.instruments)):
        assert feed.valid[i], feed.instruments[i].symbol
        for side in (0, 1):
            assert feed.book_levels(i, side) == st["ref"].levels(i, side)
    return feed

"""The compiled L2 book against a sortedcontainers.SortedDict reference: unit cases, random
streams (hypothesis) and every recorded venue session in ../shared/data/venues (or the copies in
tests/data/venues)."""
from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedDict

from appliance.engine import book

ROOT = Path(__file__).resolve().parents[2]
DATA_DIRS = [ROOT / "tests" / "data" / "venues", ROOT.parent / "shared" / "data" / "venues",
             Path("/work/shared/data/venues")]


def data_dir() -> Path:
    for d in DATA_DIRS:
        if (d / "KRAKEN.ws.50.0").exists():
            return d
    pytest.fail(f"recorded venue sessions not found in any of {[str(d) for d in DATA_DIRS]}")


class RefBook:
    """Reference book with the same full-side rule: insert, then drop the worst level if over cap."""

    def __init__(self, cap: int):
        self.cap = cap
        self.sides = (SortedDict(), SortedDict())   # price -> qty; bids best = last, asks best = first

    def update(self, s: int, price: int, q: int) -> int:
        d = self.sides[s]
        if price in d:
            if q:
                d[price] = q
                return book.OK
            del d[price]
            return book.REMOVED
        if q == 0:
            return book.MISSING
        if len(d) < self.cap:
            d[price] = q
            return book.ADDED
        worst = d.peekitem(0)[0] if s == 0 else d.peekitem(-1)[0]
        if (s == 0 and price < worst) or (s == 1 and price > worst):
            return book.DROPPED_FULL
        del d[worst]
        d[price] = q
        return book.EVICTED

    def levels(self, s: int) -> list[tuple[int, int]]:
        d = self.sides[s]
        items = list(d.items())
        return items[::-1] if s == 0 else items


def assert_same(px, qty, n, b, ref: RefBook, k: int | None = None) -> None:
    """Depth, best and the top k levels (all levels if k is None) of both sides agree."""
    for s in (0, 1):
        d = ref.sides[s]
        assert book.depth(n, b, s) == len(d)
        if k is None:
            want = ref.levels(s)
            got = book.side_levels(px, qty, n, b, s)
        else:
            keys = d.islice(max(0, len(d) - k), len(d), reverse=True) if s == 0 else d.islice(0, k)
            want = [(p, d[p]) for p in keys]
            got = [book.level(px, qty, n, b, s, j) for j in range(min(k, len(d)))]
        assert got == want, f"side {s}"
        assert book.best(px, qty, n, b, s) == (want[0] if want else (0, 0))


# --- unit cases ----------------------------------------------------------------------------------

def test_empty_book_best_is_zero_and_not_crossed():
    px, qty, n = book.new_books(3, 8)
    assert book.best(px, qty, n, 1, 0) == (0, 0)
    assert book.best(px, qty, n, 1, 1) == (0, 0)
    assert book.level(px, qty, n, 1, 0, 0) == (0, 0)
    assert book.depth(n, 1, 0) == 0
    assert not book.is_crossed(px, n, 1)


def test_levels_are_stored_worst_first_best_last_on_both_sides():
    px, qty, n = book.new_books(1, 8)
    for p in (100, 102, 101):
        assert book.update(px, qty, n, 0, book.BIDS, p, 5) == book.ADDED
        assert book.update(px, qty, n, 0, book.ASKS, p + 10, 7) == book.ADDED
    assert list(px[0, 0, :3]) == [100, 101, 102]
    assert list(px[0, 1, :3]) == [112, 111, 110]
    assert book.best(px, qty, n, 0, 0) == (102, 5)
    assert book.best(px, qty, n, 0, 1) == (110, 7)
    assert book.level(px, qty, n, 0, 0, 2) == (100, 5)
    assert book.level(px, qty, n, 0, 0, 3) == (0, 0)


def test_zero_qty_removes_existing_level_and_reports_missing_otherwise():
    px, qty, n = book.new_books(1, 8)
    book.update(px, qty, n, 0, 0, 100, 1)
    book.update(px, qty, n, 0, 0, 101, 2)
    assert book.update(px, qty, n, 0, 0, 101, 0) == book.REMOVED
    assert book.update(px, qty, n, 0, 0, 101, 0) == book.MISSING
    assert book.update(px, qty, n, 0, 0, 100, 9) == book.OK
    assert book.side_levels(px, qty, n, 0, 0) == [(100, 9)]


def test_full_side_drops_worse_level_and_evicts_worst_for_better_level():
    px, qty, n = book.new_books(1, 3)
    for p in (10, 11, 12):
        book.update(px, qty, n, 0, 0, p, 1)
    assert book.update(px, qty, n, 0, 0, 9, 1) == book.DROPPED_FULL
    assert book.update(px, qty, n, 0, 0, 13, 4) == book.EVICTED
    assert book.side_levels(px, qty, n, 0, 0) == [(13, 4), (12, 1), (11, 1)]
    assert book.update(px, qty, n, 0, 1, 50, 1) == book.ADDED
    for p in (51, 52):
        book.update(px, qty, n, 0, 1, p, 1)
    assert book.update(px, qty, n, 0, 1, 53, 1) == book.DROPPED_FULL
    assert book.update(px, qty, n, 0, 1, 49, 2) == book.EVICTED
    assert book.side_levels(px, qty, n, 0, 1) == [(49, 2), (50, 1), (51, 1)]


def test_bad_arguments_return_bad_arg_and_python_wrapper_raises():
    px, qty, n = book.new_books(2, 4)
    assert book.update(px, qty, n, 0, 2, 100, 1) == book.BAD_ARG
    assert book.update(px, qty, n, 0, 0, 100, -1) == book.BAD_ARG
    assert book.update(px, qty, n, 0, 0, 0, 1) == book.BAD_ARG
    assert book.update(px, qty, n, 5, 0, 100, 1) == book.BAD_ARG
    assert n.sum() == 0
    with pytest.raises(book.BookError, match="qty=-3"):
        book.check_update(px, qty, n, 0, 0, 100, -3)
    with pytest.raises(ValueError):
        book.new_books(0, 4)


def test_crossed_book_detected_and_clear_empties_only_that_book():
    px, qty, n = book.new_books(2, 4)
    book.update(px, qty, n, 0, 0, 101, 1)
    book.update(px, qty, n, 0, 1, 100, 1)
    book.update(px, qty, n, 1, 0, 99, 1)
    assert book.is_crossed(px, n, 0)
    assert not book.is_crossed(px, n, 1)
    book.clear(px, qty, n, 0)
    assert book.depth(n, 0, 0) == 0 and book.depth(n, 0, 1) == 0
    assert book.depth(n, 1, 0) == 1


def test_deep_book_uses_binary_search_beyond_linear_levels():
    px, qty, n = book.new_books(1, 1000)
    ref = RefBook(1000)
    rng = np.random.default_rng(7)
    prices = rng.permutation(np.arange(1, 1201))
    for p in prices:
        for s in (0, 1):
            assert book.update(px, qty, n, 0, s, int(p), int(p) % 13 + 1) == ref.update(s, int(p), int(p) % 13 + 1)
    for p in prices[:300]:
        for s in (0, 1):
            assert book.update(px, qty, n, 0, s, int(p), 0) == ref.update(s, int(p), 0)
            assert book.qty_at(px, qty, n, 0, s, int(p)) == 0
    assert_same(px, qty, n, 0, ref)
    out_p = np.zeros(5, np.int64)
    out_q = np.zeros(5, np.int64)
    assert book.top(px, qty, n, 0, 1, out_p, out_q) == 5
    assert [(int(a), int(b)) for a, b in zip(out_p, out_q)] == ref.levels(1)[:5]


def test_update_reports_each_code_on_a_full_book():
    px, qty, n = book.new_books(1, 2)
    rcs = [book.update(px, qty, n, 0, s, p, q)
           for s, p, q in [(0, 5, 1), (0, 6, 1), (0, 4, 1), (0, 7, 1), (1, 9, -1)]]
    assert rcs == [book.ADDED, book.ADDED, book.DROPPED_FULL, book.EVICTED, book.BAD_ARG]


# --- random streams ------------------------------------------------------------------------------

updates = st.lists(st.tuples(st.integers(0, 1), st.integers(1, 60), st.integers(0, 5)), max_size=400)


@settings(max_examples=150, deadline=None)
@given(cap=st.integers(1, 24), stream=updates)
def test_random_stream_matches_sorteddict_reference_after_every_update(cap, stream):
    px, qty, n = book.new_books(2, cap)
    ref = RefBook(cap)
    for s, p, q in stream:
        assert book.update(px, qty, n, 1, s, p, q) == ref.update(s, p, q)
        assert book.best(px, qty, n, 1, s) == (ref.levels(s)[0] if ref.levels(s) else (0, 0))
    assert_same(px, qty, n, 1, ref)
    assert book.depth(n, 0, 0) == 0   # the other book was never touched


# --- recorded sessions ---------------------------------------------------------------------------

SCALE = Decimal(10) ** 8    # asks up to 9,999,999,999 (Kraken XBT/CHF, Bitstamp ethusd)
LOT_SCALE = Decimal(10) ** 8


def ticks(x, scale: Decimal = SCALE) -> int:
    """Exact integer in units of 1/scale of a decimal string or a JSON number."""
    v = Decimal(x if isinstance(x, str) else repr(x)) * scale
    assert v == v.to_integral_value(), x
    return int(v)


def lots(x) -> int:
    """Quantities in units of 1e-8 (every venue's lot precision here)."""
    return ticks(x, LOT_SCALE)


def ws_frames(path: Path):
    """Received frames of a cryptofeed text recording (lines `<ts>: <frame>`)."""
    for line in path.read_text().splitlines():
        if not line or line.startswith(("wss://", "ws://")):
            continue
        _, _, frame = line.partition(": ")
        yield orjson.loads(frame)


def http_bodies(path: Path):
    for line in path.read_text().splitlines():
        m = re.match(r"(\S+) -> [0-9.]+: (.*)", line)
        if m:
            yield m.group(1), orjson.loads(m.group(2))


# Each extractor yields events: ("reset", key) or ("upd", key, side, price, qty) or ("end", key).

def coinbase_events(d: Path):
    for m in ws_frames(d / "COINBASE.ws.28.0"):
        if not isinstance(m, dict):
            continue
        if m.get("type") == "snapshot":
            key = m["product_id"]
            yield ("reset", key)
            for s, name in ((0, "bids"), (1, "asks")):
                for p, q in m[name]:
                    yield ("upd", key, s, ticks(p), lots(q))
            yield ("end", key)
        elif m.get("type") == "l2update":
            key = m["product_id"]
            for side, p, q in m["changes"]:
                yield ("upd", key, 0 if side == "buy" else 1, ticks(p), lots(q))
            yield ("end", key)


def kraken_events(d: Path):
    for m in ws_frames(d / "KRAKEN.ws.50.0"):
        if not isinstance(m, list):
            continue
        key = m[-1]
        for part in m[1:-2]:
            if "as" in part or "bs" in part:
                yield ("reset", key)
            for name, s in (("as", 1), ("bs", 0), ("a", 1), ("b", 0)):
                for lvl in part.get(name, ()):
                    yield ("upd", key, s, ticks(lvl[0]), lots(lvl[1]))
        yield ("end", key)


def bitfinex_events(d: Path):
    chans = {}
    for m in ws_frames(d / "BITFINEX.ws.11.0"):
        if isinstance(m, dict):
            if m.get("event") == "subscribed" and m.get("channel") == "book":
                chans[m["chanId"]] = m["symbol"]
            continue
        if m[0] not in chans or m[1] == "hb":
            continue
        key = chans[m[0]]
        body = m[1]
        levels = body if body and isinstance(body[0], list) else [body]
        if body and isinstance(body[0], list):
            yield ("reset", key)
        for price, count, amount in levels:
            s = 0 if amount > 0 else 1
            yield ("upd", key, s, ticks(price), 0 if count == 0 else abs(lots(amount)))
        yield ("end", key)


def binance_events(d: Path):
    snaps = {}
    for url, body in http_bodies(d / "BINANCE.http.0.0"):
        snaps[re.search(r"symbol=(\w+)", url).group(1)] = body
    applied = set()
    for m in ws_frames(d / "BINANCE.ws.1.0"):
        data = m.get("data", {}) if isinstance(m, dict) else {}
        if data.get("e") != "depthUpdate" or data["s"] not in snaps:
            continue
        key = data["s"]
        snap = snaps[key]
        if key not in applied:
            applied.add(key)
            yield ("reset", key)
            for s, name in ((0, "bids"), (1, "asks")):
                for p, q in snap[name]:
                    yield ("upd", key, s, ticks(p), lots(q))
            yield ("end", key)
        if data["u"] <= snap["lastUpdateId"]:
            continue
        for s, name in ((0, "b"), (1, "a")):
            for p, q in data[name]:
                yield ("upd", key, s, ticks(p), lots(q))
        yield ("end", key)


def bitstamp_events(d: Path):
    for url, body in http_bodies(d / "BITSTAMP.http.0.0"):
        key = url.rstrip("/").rsplit("/", 1)[-1]
        yield ("reset", key)
        for s, name in ((0, "bids"), (1, "asks")):
            for p, q in body[name]:
                yield ("upd", key, s, ticks(p), lots(q))
        yield ("end", key)
    for m in ws_frames(d / "BITSTAMP.ws.1.0"):
        if not isinstance(m, dict) or m.get("event") != "data":
            continue
        key = m["channel"].rsplit("_", 1)[-1]
        for s, name in ((0, "bids"), (1, "asks")):
            for p, q in m["data"].get(name, ()):
                yield ("upd", key, s, ticks(p), lots(q))
        yield ("end", key)


def coinbase_advanced_events(d: Path):
    import zstandard
    raw = zstandard.ZstdDecompressor().stream_reader(open(d / "COINBASE_ADVANCED.jsonl.zst", "rb")).read()
    for line in raw.splitlines():
        ev = orjson.loads(line)
        if ev.get("t") != "recv" or '"l2_data"' not in ev["data"]:
            continue
        m = orjson.loads(ev["data"])
        for e in m["events"]:
            key = e["product_id"]
            if e["type"] == "snapshot":
                yield ("reset", key)
            for u in e["updates"]:
                yield ("upd", key, 0 if u["side"] == "bid" else 1, ticks(u["price_level"]),
                       lots(u["new_quantity"]))
            yield ("end", key)


@pytest.mark.parametrize("venue,events,cap,min_updates", [
    ("coinbase_advanced", coinbase_advanced_events, 1000, 10_000),
    ("coinbase", coinbase_events, 1000, 9_000),
    ("kraken", kraken_events, 1000, 4_000),
    ("bitfinex", bitfinex_events, 100, 1_000),
    ("binance", binance_events, 1000, 150),
    ("bitstamp", bitstamp_events, 1000, 600),
])
def test_recorded_session_book_matches_sorteddict_reference_at_every_frame(venue, events, cap, min_updates):
    d = data_dir()
    keys: dict[str, int] = {}
    evs = list(events(d))
    for ev in evs:
        keys.setdefault(ev[1], len(keys))
    px, qty, n = book.new_books(len(keys), cap)
    refs = {k: RefBook(cap) for k in keys}
    n_upd = 0
    for ev in evs:
        key = ev[1]
        b = keys[key]
        if ev[0] == "reset":
            book.clear(px, qty, n, b)
            refs[key] = RefBook(cap)
        elif ev[0] == "upd":
            _, _, s, p, q = ev
            assert book.update(px, qty, n, b, s, p, q) == refs[key].update(s, p, q), (venue, key, ev)
            n_upd += 1
        else:
            assert_same(px, qty, n, b, refs[key], k=25)
    for key, b in keys.items():
        assert_same(px, qty, n, b, refs[key])
    assert n_upd >= min_updates

"""REST-snapshot sync shared by Binance and Bitstamp: snapshot URLs in every documented form,
replay that never reports success on nothing, quiet symbols that are not refetched, and the
per-symbol refetch back-off."""
from __future__ import annotations

import shutil

import orjson
import pytest

from appliance.venues import (binance, bitfinex, bitstamp, coinbase, coinbase_advanced, common,
                              gateway, kraken, recording, registry, replay)
from appliance.venues.common import B_REQ
from appliance.sim.venue import VenueSim
from tests.venues.conftest import DATA, SESSIONS
from tests.venues.test_gateway import Running

BINANCE_SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]


@pytest.mark.parametrize("mod,url,want", [
    (binance, "https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000", "NKNUSDT"),
    (binance, "https://api.binance.com/api/v1/depth?limit=100&symbol=BLZETH", "BLZETH"),
    (binance, "https://api3.binance.com/api/v3/depth?symbol=nknusdt", "NKNUSDT"),
    (binance, "https://data-api.binance.vision/api/v3/depth?symbol=LRCBTC&limit=5000", "LRCBTC"),
    (binance, "https://api.binance.us/api/v3/depth?symbol=RUNEEUR&limit=500", "RUNEEUR"),
    (binance, "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000", "BTCUSDT"),
    (binance, "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP", "BTCUSD_PERP"),
    (binance, "https://eapi.binance.com/eapi/v1/depth?symbol=BTC-240628-60000-C", "BTC-240628-60000-C"),
    (binance, "https://testnet.binance.vision/api/v3/depth?symbol=NKNUSDT", "NKNUSDT"),
    (binance, "http://127.0.0.1:9001/binance/api/v3/depth?symbol=NKNUSDT&limit=1000", "NKNUSDT"),
    (binance, "https://api.binance.com/api/v3/ticker?symbol=NKNUSDT", None),
    (binance, "https://api.binance.com/api/v3/depth", None),
    (bitstamp, "https://www.bitstamp.net/api/v2/order_book/ethusd", "ethusd"),
    (bitstamp, "https://www.bitstamp.net/api/v2/order_book/ethusd/", "ethusd"),
    (bitstamp, "https://www.bitstamp.net/api/v2/order_book/ETHUSD/?group=2", "ethusd"),
    (bitstamp, "https://www.bitstamp.net/api/order_book/", "btcusd"),
    (bitstamp, "https://www.bitstamp.net/api/v2/ticker/ethusd/", None),
    (coinbase, "https://api.exchange.coinbase.com/products/BTC-USD/book?level=2", "BTC-USD"),
    (coinbase, "https://api.pro.coinbase.com/products/eth-usd/book?level=3", "ETH-USD"),
    (coinbase, "https://api.exchange.coinbase.com/products/BTC-USD/ticker", None),
    (coinbase_advanced, "https://api.coinbase.com/api/v3/brokerage/market/product_book?product_id=BTC-USD", "BTC-USD"),
    (coinbase_advanced, "https://api.coinbase.com/api/v3/brokerage/product_book?product_id=ETH-USD&limit=50", "ETH-USD"),
    (kraken, "https://api.kraken.com/0/public/Depth?pair=XBTUSD&count=100", "XBTUSD"),
    (kraken, "https://api.kraken.com/0/public/Ticker?pair=XBTUSD", None),
    (bitfinex, "https://api-pub.bitfinex.com/v2/book/tBTCUSD/P0?len=100", "tBTCUSD"),
    (bitfinex, "https://api.bitfinex.com/v1/book/btcusd", "tBTCUSD"),
])
def test_snapshot_urls_are_recognised_in_every_documented_form(mod, url, want):
    assert mod.snapshot_symbol(url) == want


def test_every_venue_module_has_the_same_shape():
    for name in registry.VENUES:
        mod = registry.module(name)
        for attr in ("NAME", "VENUE_ID", "METADATA_PATHS", "SIM_SHIFT_KEYS", "parse_frame",
                     "handle_frame", "pump", "load_instruments", "subscribe_messages",
                     "stream_path", "snapshot_symbol", "warm", "Feed"):
            assert hasattr(mod, attr), (name, attr)
        assert mod.NAME == name
        assert issubclass(mod.Feed, common.BaseFeed)
        assert mod.Feed.handle is not None and mod.Feed.pump is not None


def _binance_copy(tmp_path, rewrite):
    """The Binance recording with its snapshot URLs rewritten by ``rewrite(url) -> url``."""
    for f in ("BINANCE.0", "BINANCE.ws.1.0"):
        shutil.copy(DATA / f, tmp_path / f)
    lines = []
    for url, ts, body in recording.http_bodies(DATA / "BINANCE.http.0.0"):
        lines.append(rewrite(url).encode() + b" -> " + repr(ts).encode() + b": " + body)
    (tmp_path / "BINANCE.http.0.0").write_bytes(b"\n".join(lines) + b"\n")
    return tmp_path / "BINANCE.ws.1.0"


@pytest.mark.parametrize("rewrite", [
    lambda u: u.replace("https://api.binance.com/api/v3/", "https://api.binance.us/api/v3/"),
    lambda u: u.replace("/api/v3/depth?symbol=", "/api/v1/depth?limit=1000&symbol=").replace("&limit=1000", ""),
    lambda u: u.replace("api.binance.com/api/v3", "data-api.binance.vision/api/v3"),
])
def test_replay_uses_snapshots_from_any_documented_endpoint_form(tmp_path, rewrite, capsys):
    path = _binance_copy(tmp_path, rewrite)
    assert replay.main([str(path), "--venue", "binance", "--json", "--strict"]) == 0
    res = orjson.loads(capsys.readouterr().out)
    assert res["snapshots_used"] == 4 and res["never_synced"] == {} and res["errors"] == 0
    ref = replay.result(replay.run(DATA / SESSIONS["binance"], "binance"))
    assert res["books"] == ref["books"]


def test_replay_without_usable_snapshots_is_an_error_not_an_empty_success(tmp_path, capsys):
    path = _binance_copy(tmp_path, lambda u: u.replace("/api/v3/depth", "/api/v3/ticker/bookTicker"))
    assert replay.main([str(path), "--venue", "binance", "--json"]) == 0      # reports, no verdict
    res = orjson.loads(capsys.readouterr().out)
    assert res["snapshots_used"] == 0 and res["snapshots_unused"] == 4
    assert res["never_synced"] == {s: "snapshot pending" for s in BINANCE_SYMBOLS}
    assert res["errors"] == 4
    assert replay.main([str(path), "--venue", "binance", "--json", "--strict"]) == 1
    err = capsys.readouterr().err
    assert "book NKNUSDT never synced (snapshot pending)" in err


def test_strict_replay_fails_on_an_injected_gap(capsys):
    frames = {"n": 0}

    def drop_one(feed, ts, frame):
        if b'"s":"BLZETH","U"' in frame:
            frames["n"] += 1
            if frames["n"] == 5:
                return None
        return frame

    feed = replay.run(DATA / SESSIONS["binance"], "binance", on_frame_hook=drop_one)
    res = replay.result(feed)
    assert res["gaps"] == 1 and replay.failed(res)


def _quiet_binance(tmp_path):
    """The Binance recording without any NKNUSDT frame: NKNUSDT is a quiet symbol (its REST
    snapshot is there, its stream says nothing)."""
    for f in ("BINANCE.0", "BINANCE.http.0.0"):
        shutil.copy(DATA / f, tmp_path / f)
    lines = [ln for ln in (DATA / "BINANCE.ws.1.0").read_bytes().splitlines(keepends=True)
             if b"nknusdt@" not in ln]
    (tmp_path / "BINANCE.ws.1.0").write_bytes(b"".join(lines))
    return tmp_path / "BINANCE.ws.1.0"


def test_a_quiet_symbol_on_a_live_connection_is_not_stale_and_not_refetched(tmp_path):
    path = _quiet_binance(tmp_path)
    with VenueSim("binance", [path], pace="realtime", speed=4.0) as s:
        run = Running("binance", BINANCE_SYMBOLS, s, stale_after_ms=2_000)
        try:
            # NKNUSDT gets its snapshot and then nothing for the whole session while the other
            # symbols flow: far longer than stale_after_ms
            assert run.wait(lambda: s.stats.completed >= 1, timeout=60)
            assert run.gw.feed.is_valid("NKNUSDT")
        finally:
            st = run.stop()
    assert st["stale"] == 0 and st["resyncs"] == 0 and st["gaps"] == 0
    assert st["snapshot_fetches"] == 4 and st["snapshots"] == 4
    assert st["never_synced"] == 0


def test_refetches_of_one_symbol_back_off_exponentially_on_one_connection():
    ins = binance.load_instruments((DATA / "BINANCE.0").read_bytes(), ["NKNUSDT"])
    gw = gateway.Gateway("binance", ins, common.RecordWriter.local(1024), "ws://127.0.0.1:1",
                         "http://127.0.0.1:1", snapshot_backoff_s=(1.0, 4.0), warm=False)
    waits = []
    for _ in range(5):
        gw.feed.st.book[0, B_REQ] = 0             # the feed asks for the snapshot again
        gw._inflight.clear()
        before = gateway.time.monotonic()
        gw._snapshots()
        if "NKNUSDT" in gw._retry:
            waits.append(round(gw._retry["NKNUSDT"][1] - before))
            del gw._retry["NKNUSDT"]
        else:
            waits.append(0)
        last, streak = gw._snap_hist["NKNUSDT"]
        gw._snap_hist["NKNUSDT"] = (before, streak)    # as if the fetch happened just now
    assert waits == [0, 1, 2, 4, 4]
    assert gw.counts["snapshot_backoffs"] == 4

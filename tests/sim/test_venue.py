"""The venue simulator over real loopback sockets: replay order, subscription gating, REST
snapshots, every fault, and the CLI."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest
import websocket

from appliance.venues import recording
from appliance.sim import venue as sim
from appliance.sim.venue import Faults, VenueSim


def recv_all(ws, idle_s: float = 1.0, limit: int = 100_000) -> list[bytes]:
    """Frames until the peer closes or nothing arrives for idle_s."""
    out = []
    ws.settimeout(idle_s)
    while len(out) < limit:
        try:
            op, data = ws.recv_data()
        except (websocket.WebSocketTimeoutException, websocket.WebSocketConnectionClosedException,
                ConnectionError):
            break
        if op == websocket.ABNF.OPCODE_CLOSE:
            break
        out.append(data)
    return out


@pytest.fixture
def kraken_book_sim():
    path = sim.find_data_dir() / "KRAKEN.ws.50.0"
    with VenueSim("kraken", [path]) as s:
        yield s, path


def test_stream_replays_every_recorded_frame_in_order_after_subscription(kraken_book_sim):
    s, path = kraken_book_sim
    want = [f for _, f in recording.frames(path)]
    ws = websocket.create_connection(s.ws_url, timeout=5)
    ws.send('{"event":"subscribe"}')
    got = recv_all(ws)
    ws.close()
    assert got == want
    assert s.stats.completed == 1
    assert s.stats.client_messages == [(1, '{"event":"subscribe"}')]


def test_stream_waits_for_the_clients_subscription(kraken_book_sim):
    s, _ = kraken_book_sim
    ws = websocket.create_connection(s.ws_url, timeout=5)
    assert recv_all(ws, idle_s=0.3) == []          # Kraken's recording: client speaks first
    ws.send('{"event":"subscribe"}')
    assert len(recv_all(ws, idle_s=0.5, limit=10)) == 10
    ws.close()


def test_rest_snapshot_is_chosen_by_path_and_symbol_query():
    with VenueSim("binance") as s:
        for sym in ("BLZETH", "NKNUSDT"):
            body = urllib.request.urlopen(f"{s.rest_url}/api/v3/depth?symbol={sym}&limit=1000").read()
            want = [b for u, _, b in recording.http_bodies(sim.find_data_dir() / "BINANCE.http.0.0")
                    if f"symbol={sym}&" in u]
            assert body == want[0]
        info = orjson.loads(urllib.request.urlopen(f"{s.rest_url}/api/v3/exchangeInfo").read())
        assert any(x["symbol"] == "NKNUSDT" for x in info["symbols"])
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{s.rest_url}/api/v3/nothing")
        assert e.value.code == 404
        e.value.close()
        assert s.stats.rest_requests == 4 and s.stats.rest_not_found == 1


def test_binance_combined_stream_url_gets_only_its_streams():
    with VenueSim("binance") as s:
        ws = websocket.create_connection(s.ws_url + "/stream?streams=nknusdt@depth@100ms", timeout=5)
        got = recv_all(ws, idle_s=0.5)
        ws.close()
    assert got and all(f.startswith(b'{"stream":"nknusdt@depth@100ms"') for f in got)


def test_drop_duplicate_and_garbage_faults_reshape_the_stream():
    path = sim.find_data_dir() / "BITSTAMP.ws.1.0"
    want = [f for _, f in sim.Script([path]).post]
    with VenueSim("bitstamp", [path], faults=Faults(drop_every=5, duplicate_every=7, garbage_every=11)) as s:
        ws = websocket.create_connection(s.ws_url, timeout=5)
        ws.send("{}")
        got = recv_all(ws)
        ws.close()
    exp = []
    for k, f in enumerate(want, 1):
        if k % 11 == 0:
            exp.append(None)
        if k % 5:
            exp.append(f)
            if k % 7 == 0:
                exp.append(f)
    assert len(got) == len(exp)
    for g, e in zip(got, exp):
        if e is None:
            assert g not in want        # a garbage frame, never a recorded one
        else:
            assert g == e
    assert s.stats.dropped == len(want) // 5
    assert s.stats.garbage == len(want) // 11


def test_disconnect_after_n_frames_drops_tcp_and_next_connection_replays_from_start(kraken_book_sim):
    path = sim.find_data_dir() / "KRAKEN.ws.50.0"
    want = [f for _, f in recording.frames(path)]
    with VenueSim("kraken", [path], faults=Faults(disconnect_after=25)) as s:
        ws = websocket.create_connection(s.ws_url, timeout=5)
        ws.send("{}")
        first = recv_all(ws, idle_s=2.0)
        ws2 = websocket.create_connection(s.ws_url, timeout=5)
        ws2.send("{}")
        second = recv_all(ws2, limit=40)
        ws2.close()
    assert first == want[:25]
    assert second == want[:40]                  # only the first connection is cut (disconnects=1)
    assert s.stats.disconnects == 1


def test_stall_pauses_the_stream_after_n_frames():
    path = sim.find_data_dir() / "KRAKEN.ws.50.0"
    with VenueSim("kraken", [path], faults=Faults(stall_after=10, stall_ms=3000)) as s:
        ws = websocket.create_connection(s.ws_url, timeout=5)
        ws.send("{}")
        got = recv_all(ws, idle_s=1.0)
        ws.close()
    assert len(got) == 10
    assert s.stats.stalls == 1


def test_realtime_pacing_keeps_recorded_gaps():
    with VenueSim("binance", pace=sim.PACE_REALTIME) as s:      # a 31 s recording
        ws = websocket.create_connection(s.ws_url, timeout=5)
        ws.settimeout(0.2)
        got = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                ws.recv_data()
                got += 1
            except websocket.WebSocketTimeoutException:
                pass
        ws.close()
    # 1.5 s of a 31 s session at recorded pace: some frames, far from all of them
    assert 0 < got < len(s.script.post) // 4


def test_bad_options_are_rejected_with_clear_errors():
    with pytest.raises(sim.SimError, match="stall_ms"):
        Faults(stall_after=3)
    with pytest.raises(sim.SimError, match="drop_every"):
        Faults(drop_every=-1)
    with pytest.raises(sim.SimError, match="pace"):
        VenueSim("binance", pace="slow")
    with pytest.raises(sim.SimError, match="no recording"):
        sim.default_recordings("nosuchvenue")


def test_cli_venue_sim_serves_until_its_time_is_up():
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "venue-sim", "--venue", "bitfinex",
                          "--port", "0", "--pace", "fast", "--seconds", "3", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        m = re.search(r"ws (ws://\S+)", line)
        assert m, line
        ws = websocket.create_connection(m.group(1), timeout=5)
        ws.send('{"event":"conf","flags":65536}')
        got = recv_all(ws, idle_s=0.5, limit=50)
        ws.close()
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert len(got) == 50
    assert p.returncode == 0, err
    st = json.loads(out.strip().splitlines()[-1])
    assert st["connections"] == 1 and st["frames_sent"] >= 50


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_venue_sim_stops_cleanly_on_sigterm_and_sigint_before_its_time(sig):
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "venue-sim", "--venue", "bitfinex",
                          "--port", "0", "--pace", "fast", "--seconds", "600", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert re.search(r"ws (ws://\S+)", line), (line, p.stderr.read() if p.poll() is not None else "")
        t = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
        assert time.monotonic() - t < 10             # not held by the --seconds timer
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1])["connections"] == 0


def test_loop_shifts_stream_ids_and_the_rest_snapshot_alike():
    path = sim.find_data_dir() / "BINANCE.ws.1.0"
    script = sim.Script([path], "binance")
    depth = next(d for _, d in script.post if b'"depthUpdate"' in d)
    u0 = orjson.loads(depth)["data"]["u"]
    span = next(sp for pat, sp in script.shifter.pats if pat.pattern.find(b"lastUpdateId") >= 0)
    assert orjson.loads(script.frame(depth, 2))["data"]["u"] == u0 + 2 * span
    snap = "/api/v3/depth?symbol=NKNUSDT&limit=1000"
    id0 = orjson.loads(script.lookup(snap))["lastUpdateId"]
    script.new_loop(2)
    body = orjson.loads(script.lookup(snap))
    assert body["lastUpdateId"] == id0 + 2 * span          # first recorded snapshot again, shifted
    assert body["bids"] == orjson.loads(sim.Script([path]).lookup(snap))["bids"]


@pytest.mark.slow
@pytest.mark.parametrize("venue,symbols", [
    ("binance", ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]),
    ("kraken", ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/XBT",
                "OMG/USD", "XBT/CHF", "ADA/XBT"]),
])
def test_looping_simulator_through_the_gateway_has_no_gap_or_resync_and_each_loop_ends_on_the_reference(venue, symbols):
    from appliance.venues import replay
    from tests.venues.test_gateway import Running
    book_path = next(p for p in sim.default_recordings(venue) if venue != "kraken" or p.name == "KRAKEN.ws.50.0")
    offline = replay.run(book_path, venue)
    ref = {s: offline.top(s, 10) for s in symbols}
    loops = 3
    tops, problems = [], []
    holder = {}

    def at_loop_end(k):
        if len(tops) >= loops:
            return      # a loop that ended while the test stopped the gateway: not checked
        run = holder["run"]
        gw = run.gw
        if not run.wait(lambda: gw.stats()["frames"] >= s.stats.frames_sent
                        and gw.stats()["books_valid"] == len(symbols), timeout=60):
            problems.append((k, gw.stats()))
        tops.append({sym: gw.feed.top(sym, 10) for sym in symbols})

    with VenueSim(venue, loop=True, on_loop_end=at_loop_end) as s:
        holder["run"] = run = Running(venue, symbols, s)
        try:
            assert run.wait(lambda: len(tops) >= loops, timeout=300)
        finally:
            st = run.stop()
    assert problems == []
    assert s.stats.loops >= loops and st["reconnects"] >= loops - 1
    assert st["gaps"] == 0 and st["resyncs"] == 0 and st["errors"] == 0, st
    assert st["checksums_failed"] == 0
    for k in range(loops):
        assert tops[k] == ref, k


@pytest.mark.parametrize("venue,msg,want", [
    ("coinbase", {"type": "subscribe", "product_ids": ["A-B"],
                  "channels": ["heartbeat", {"name": "level2", "product_ids": ["C-D"]}]}, {"A-B", "C-D"}),
    ("coinbase_advanced", {"type": "subscribe", "product_ids": ["A-B"], "channel": "level2"}, {"A-B"}),
    ("kraken", {"event": "subscribe", "pair": ["XBT/USD", 7], "subscription": {"name": "book"}},
     {"XBT/USD"}),
    ("bitstamp", {"event": "bts:subscribe", "data": {"channel": "diff_order_book_btcusd"}},
     {"diff_order_book_btcusd"}),
    ("bitstamp", {"event": "bts:heartbeat", "data": {"channel": "x"}}, set()),
    ("binance", {"method": "SUBSCRIBE", "params": ["a@depth"]}, set()),
    ("bitfinex", {"event": "subscribe", "channel": "book", "symbol": "tBTCUSD"}, set()),
])
def test_each_venue_module_names_what_a_subscribe_message_asks_for(venue, msg, want):
    from appliance.venues import registry
    assert registry.module(venue).sim_subscribed(msg) == want


@pytest.mark.parametrize("venue,frame,want", [
    ("coinbase", b'{"type":"l2update","product_id":"A-B","changes":[]}', "A-B"),
    ("coinbase_advanced", b'{"channel":"l2_data","events":[{"product_id":"A-B"}]}', "A-B"),
    ("kraken", b'[336,{"a":[["1.0","2.0","3.0"]]},"book-10","XBT/USD"]', "XBT/USD"),
    ("kraken", b'{"event":"subscriptionStatus","pair":"XBT/USD","status":"subscribed"}', "XBT/USD"),
    ("kraken", b'{"event":"heartbeat"}', None),
    ("bitstamp", b'{"data":{},"channel":"live_trades_btcusd","event":"trade"}', "live_trades_btcusd"),
    ("binance", b'{"stream":"abc@depth","data":{}}', None),
    ("bitfinex", b'[17,[1,2,3]]', None),
])
def test_each_venue_module_names_the_symbol_of_a_frame(venue, frame, want):
    from appliance.venues import registry
    assert registry.module(venue).sim_frame_symbol(frame) == want

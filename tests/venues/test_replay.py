"""Offline replay (`appliance md replay`): every recording end to end with zero errors, the JSON
shape, sibling-file lookup for a recording anywhere, recording readers for both formats."""
from __future__ import annotations

import shutil
from decimal import Decimal

import orjson
import pytest
import zstandard

from appliance.venues import recording, replay
from tests.venues.conftest import DATA, SESSIONS


@pytest.mark.parametrize("venue", sorted(SESSIONS))
def test_every_recording_replays_end_to_end_with_zero_errors(venue, capsys):
    rc = replay.main([str(DATA / SESSIONS[venue]), "--venue", venue, "--json", "--strict"])
    assert rc == 0
    out = capsys.readouterr().out
    res = orjson.loads(out)
    assert set(res) == {"frames", "errors", "gaps", "resyncs", "checksums_ok", "checksums_failed",
                        "snapshots_used", "snapshots_unused", "never_synced", "books"}
    assert res["errors"] == 0 and res["gaps"] == 0 and res["resyncs"] == 0
    assert res["never_synced"] == {}
    assert res["snapshots_used"] == {"binance": 4, "bitstamp": 10}.get(venue, 0)
    assert res["checksums_failed"] == 0
    assert res["frames"] > 100
    for sym, bk in res["books"].items():
        bids = [Decimal(p) for p, _ in bk["bids"]]
        asks = [Decimal(p) for p, _ in bk["asks"]]
        assert 0 < len(bids) <= 10 and 0 < len(asks) <= 10, sym
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < asks[0], sym
        assert all(Decimal(q) > 0 for _, q in bk["bids"] + bk["asks"])
    if venue == "kraken":
        assert res["checksums_ok"] == 4269


def test_human_output_lists_counters_and_books(capsys):
    assert replay.main([str(DATA / SESSIONS["binance"]), "--venue", "binance"]) == 0
    out = capsys.readouterr().out
    assert "frames" in out and "NKNUSDT (valid)" in out


def test_replay_of_a_copy_elsewhere_finds_its_sibling_files(tmp_path, capsys):
    for name in ("BITSTAMP.ws.1.0", "BITSTAMP.0", "BITSTAMP.http.0.0"):
        shutil.copy(DATA / name, tmp_path / name)
    assert replay.main([str(tmp_path / "BITSTAMP.ws.1.0"), "--venue", "bitstamp", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["errors"] == 0


def test_missing_metadata_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    shutil.copy(DATA / "KRAKEN.ws.50.0", tmp_path / "KRAKEN.ws.50.0")
    assert replay.main([str(tmp_path / "KRAKEN.ws.50.0"), "--venue", "kraken"]) == 2
    assert "KRAKEN.0 not found" in capsys.readouterr().err
    assert replay.main([str(tmp_path / "nope.ws.1.0"), "--venue", "kraken"]) == 2


def test_text_recording_reader_yields_connect_send_and_received_frames():
    evs = list(recording.events(DATA / "KRAKEN.ws.48.0"))
    assert evs[0].kind == recording.CONNECT and evs[0].url == "wss://ws.kraken.com"
    assert evs[1].kind == recording.SEND and evs[1].data.startswith(b'{"event":"subscribe"')
    frames = list(recording.frames(DATA / "KRAKEN.ws.48.0"))
    assert frames and all(isinstance(ts, float) for ts, _ in frames)
    assert frames[0][1].startswith(b"{")


def test_http_bodies_are_returned_by_url():
    bodies = list(recording.http_bodies(DATA / "BINANCE.http.0.0"))
    assert [u.rsplit("=", 2)[1].split("&")[0] for u, _, _ in bodies][:1] == ["NKNUSDT"]
    assert orjson.loads(bodies[0][2])["lastUpdateId"] == 499869752


def test_malformed_recording_line_names_the_file_and_line(tmp_path):
    p = tmp_path / "X.ws.1.0"
    p.write_bytes(b"wss://a <-> 1.0\nthis is not a recording line\n")
    with pytest.raises(recording.RecordingError, match=r"X.ws.1.0:2"):
        list(recording.events(p))


def test_jsonl_zst_reader_and_session_metadata(tmp_path):
    lines = [{"t": "header", "exchange": "X", "config": {"l2_book": ["A-B"]}},
             {"t": "http", "ts": 1.0, "url": "https://x/products", "data": '{"products":[]}'},
             {"t": "connect", "ts": 1.5, "addr": "wss://x"},
             {"t": "recv", "ts": 2.0, "data": '{"a":1}'},
             {"t": "http", "ts": 3.0, "url": "https://x/book", "data": "{}"}]
    p = tmp_path / "X.jsonl.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(orjson.dumps(x) for x in lines) + b"\n"))
    assert list(recording.frames(p)) == [(2.0, b'{"a":1}')]
    sess = recording.open_session(p)
    assert sess.metadata.startswith(b"https://x/products -> 1.0: {\"products\":[]}")
    assert b'configuration: {"l2_book":["A-B"]}' in sess.metadata
    assert sess.snapshots == [("https://x/book", 3.0, b"{}")]
    assert recording.configuration(p) == {"l2_book": ["A-B"]}

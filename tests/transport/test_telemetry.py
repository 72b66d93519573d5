"""Telemetry regions: written by one process, read by another, names registered once."""
from __future__ import annotations

import multiprocessing as mp

import pytest

from appliance.transport import hist, shm, telemetry


def _writer(shm_dir, ready, go):
    t = telemetry.Telemetry.create("md.test", shm_dir)
    h = t.hist("frame_to_publish")
    c = t.counter("frames")
    g = t.counter("books_valid", telemetry.KIND_GAUGE)
    for v in range(1, 1001):
        hist.record(t.hists[h], v * 100)
        t.counters[c] += 1
    t.counters[g] = 4
    ready.set()
    go.wait(30)
    t.close()


def test_a_reader_process_sees_the_writers_histograms_and_counters(shm_dir):
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_writer, args=(str(shm_dir), ready, go))
    p.start()
    try:
        assert ready.wait(60)
        snap = telemetry.read_all(str(shm_dir))["md.test"]
        assert snap["alive"] and snap["pid"] == p.pid
        s = snap["hists"]["frame_to_publish"]
        assert s["count"] == 1000 and s["min"] == 100 and s["max"] == 100_000
        assert 50_000 <= s["p50"] <= 50_000 * 1.125
        assert snap["counters"] == {"frames": 1000}
        assert snap["gauges"] == {"books_valid": 4}
    finally:
        go.set()
        p.join(30)
    assert telemetry.read_all(str(shm_dir))["md.test"]["alive"] is False


def test_a_second_writer_is_refused_and_a_restart_starts_from_zero(shm_dir):
    t = telemetry.Telemetry.create("engine", str(shm_dir))
    t.counters[t.counter("orders")] = 9
    with pytest.raises(shm.WriterAliveError):
        telemetry.Telemetry.create("engine", str(shm_dir))
    t.close()
    t2 = telemetry.Telemetry.create("engine", str(shm_dir))
    try:
        assert t2.snapshot()["counters"] == {}
    finally:
        t2.close()


def test_names_are_registered_once_and_slots_run_out_cleanly(shm_dir):
    t = telemetry.Telemetry.create("x", str(shm_dir))
    try:
        assert t.hist("a") == t.hist("a")
        for i in range(telemetry.MAX_HISTS - 1):
            t.hist(f"h{i}")
        with pytest.raises(telemetry.TelemetryError):
            t.hist("one_too_many")
        with pytest.raises(telemetry.TelemetryError):
            t.counter("n" * (telemetry.NAME_LEN + 1))
    finally:
        t.close()

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


def test_set_counters_registers_each_name_once_and_follows_a_change_of_kind(shm_dir):
    """The writer keeps its registrations: publishing the same names again writes the same
    slots, a new name takes a free one, and a name published as a gauge becomes one."""
    t = telemetry.Telemetry.create("y", str(shm_dir))
    try:
        t.set_counters({"frames": 1, "gaps": 0, "flag": True, "label": "x"})
        first = {n: t.counter(n) for n in ("frames", "gaps")}
        t.set_counters({"frames": 5, "gaps": 2, "resyncs": 1})
        assert {n: t.counter(n) for n in ("frames", "gaps")} == first
        t.set_counters({"resyncs": 3}, telemetry.KIND_GAUGE)
        r = telemetry.Telemetry.attach("y", str(shm_dir))
        try:
            snap = r.snapshot()
        finally:
            r.close()
        assert snap["counters"] == {"frames": 5, "gaps": 2}
        assert snap["gauges"] == {"resyncs": 3}
        names = [n for n in t.rec["ctr_names"] if n]
        assert sorted(names) == [b"frames", b"gaps", b"resyncs"]      # bools and text skipped
    finally:
        t.close()

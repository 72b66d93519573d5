"""Live telemetry in shared memory: per-actor latency histograms and counters.

Every actor process owns one region ``telemetry.<actor>`` (kind KIND_TELEMETRY, single writer:
the actor) laid out as :data:`TELEMETRY`::

    hist_names  S32[MAX_HISTS]      names of the histograms in use ("" = free slot)
    ctr_names   S32[MAX_COUNTERS]   names of the counters in use
    ctr_kinds   u1[MAX_COUNTERS]    KIND_COUNTER (monotonic) or KIND_GAUGE (a level)
    hists       int64[MAX_HISTS, hist.ROW]   log-linear histograms (appliance.transport.hist)
    counters    int64[MAX_COUNTERS]

The actor registers its names once at start (Python, ``Telemetry.hist`` / ``counter`` return the
slot index); compiled code then writes ``hist.record(tm_hists[i], ns)`` and plain counter
increments into the mapped arrays: no lock, no syscall, no allocation. Readers
(``appliance top``, ``appliance exporter``, ``appliance status``) map every ``telemetry.*``
region read-only in spirit and take a copy; a row may be a few increments behind the writer,
never torn in a way that matters for a percentile (each word is written whole).

Histogram values are nanoseconds; hop names follow ``<from>_to_<to>`` (e.g.
``frame_to_publish``, ``tick_to_trade``).
"""
from __future__ import annotations

import numpy as np

from appliance.transport import hist, shm

PREFIX = "telemetry."
NAME_LEN = 32
MAX_HISTS = 16
MAX_COUNTERS = 128
KIND_COUNTER = 1
KIND_GAUGE = 2

TELEMETRY = np.dtype({
    "names": ["hist_names", "ctr_names", "ctr_kinds", "hists", "counters"],
    "formats": [(f"S{NAME_LEN}", MAX_HISTS), (f"S{NAME_LEN}", MAX_COUNTERS), ("u1", MAX_COUNTERS),
                ("<i8", (MAX_HISTS, hist.ROW)), ("<i8", MAX_COUNTERS)],
    "offsets": [0, NAME_LEN * MAX_HISTS, NAME_LEN * (MAX_HISTS + MAX_COUNTERS),
                NAME_LEN * (MAX_HISTS + MAX_COUNTERS) + 128,
                NAME_LEN * (MAX_HISTS + MAX_COUNTERS) + 128 + 8 * MAX_HISTS * hist.ROW],
    "itemsize": NAME_LEN * (MAX_HISTS + MAX_COUNTERS) + 128 + 8 * MAX_HISTS * hist.ROW
                + 8 * MAX_COUNTERS,
    "aligned": True,
})
assert TELEMETRY.fields["hists"][1] % 64 == 0 and TELEMETRY.fields["counters"][1] % 64 == 0
assert MAX_COUNTERS <= 128


class TelemetryError(ValueError):
    """A name does not fit, or every slot is taken."""


def region_name(actor: str) -> str:
    return PREFIX + actor


class Telemetry:
    """One actor's telemetry region (writer: ``create``; reader: ``attach``)."""

    def __init__(self, region: shm.Region):
        self.region = region
        raw = region.data_view().reshape(-1)[:TELEMETRY.itemsize]
        self.rec = raw.view(TELEMETRY)[0]
        self.hists = self.rec["hists"]          # int64[MAX_HISTS, hist.ROW], mapped
        self.counters = self.rec["counters"]    # int64[MAX_COUNTERS], mapped
        # counter name -> (slot, kind): the writer's registrations, so that a status period's
        # set_counters does not scan the name table once per name (~0.1 ms an actor, in its loop)
        self._ctr_slots: dict[str, tuple[int, int]] = {}

    @classmethod
    def create(cls, actor: str, shm_dir=None, reset: bool = True) -> "Telemetry":
        """The actor's own region (writer lock held for the process's lifetime). ``reset``
        clears what a previous run of the actor left (a restart starts from zero)."""
        region = shm.create(region_name(actor), shm.KIND_TELEMETRY, 8,
                            (TELEMETRY.itemsize + 7) // 8, shm.HEADER_BYTES, shm_dir)
        t = cls(region)
        if reset:
            t.rec["hist_names"][:] = b""
            t.rec["ctr_names"][:] = b""
            t.rec["ctr_kinds"][:] = 0
            t.hists[:] = 0
            t.counters[:] = 0
        return t

    @classmethod
    def attach(cls, actor: str, shm_dir=None) -> "Telemetry":
        return cls(shm.attach(region_name(actor), shm.KIND_TELEMETRY, shm_dir))

    @staticmethod
    def _slot(names: np.ndarray, name: str) -> int:
        b = name.encode()
        if not b or len(b) > NAME_LEN:
            raise TelemetryError(f"telemetry name {name!r}: 1..{NAME_LEN} bytes")
        free = -1
        for i in range(len(names)):
            if names[i] == b:
                return i
            if free < 0 and names[i] == b"":
                free = i
        if free < 0:
            raise TelemetryError(f"telemetry: no free slot for {name!r} ({len(names)} in use)")
        names[free] = b
        return free

    def hist(self, name: str) -> int:
        """Slot of histogram ``name`` (registered on first use)."""
        return self._slot(self.rec["hist_names"], name)

    def counter(self, name: str, kind: int = KIND_COUNTER) -> int:
        """Slot of counter ``name`` (registered on first use)."""
        got = self._ctr_slots.get(name)
        if got is not None and got[1] == kind:
            return got[0]
        i = self._slot(self.rec["ctr_names"], name)
        self.rec["ctr_kinds"][i] = kind
        self._ctr_slots[name] = (i, kind)
        return i

    def set_counters(self, values: dict, kind: int = KIND_COUNTER) -> None:
        """Publish Python-side counts (name -> int) at once (status-period bridge for counters
        an actor keeps in Python)."""
        ctr = self.counters
        for name, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                continue
            ctr[self.counter(name, kind)] = int(v)

    def snapshot(self) -> dict:
        """A consistent-enough copy: {"hists": {name: hist.summary}, "counters": {name: value},
        "gauges": {...}, "rows": {name: row copy}} (rows for merging / exporters)."""
        rec = self.rec.copy()
        hists, rows = {}, {}
        for i, n in enumerate(rec["hist_names"]):
            if n:
                name = n.decode(errors="replace")
                rows[name] = rec["hists"][i].copy()
                hists[name] = hist.summary(rows[name])
        counters, gauges = {}, {}
        for i, n in enumerate(rec["ctr_names"]):
            if n:
                d = gauges if rec["ctr_kinds"][i] == KIND_GAUGE else counters
                d[n.decode(errors="replace")] = int(rec["counters"][i])
        return {"hists": hists, "counters": counters, "gauges": gauges, "rows": rows}

    def close(self) -> None:
        self.hists = self.counters = self.rec = None
        self.region.close()


def actors(shm_dir=None) -> list[str]:
    """Names of every actor with a telemetry region in ``shm_dir``."""
    return [p.name[len(PREFIX):] for p in shm.list_regions(shm_dir) if p.name.startswith(PREFIX)]


def read_all(shm_dir=None) -> dict:
    """{actor: snapshot + "alive"} for every telemetry region (regions that vanish or are not
    valid are skipped)."""
    out = {}
    for a in actors(shm_dir):
        try:
            t = Telemetry.attach(a, shm_dir)
        except shm.ShmError:
            continue
        try:
            snap = t.snapshot()
            snap["pid"] = t.region.writer_pid()
            snap["alive"] = t.region.writer_alive()
        finally:
            t.close()
        out[a] = snap
    return out

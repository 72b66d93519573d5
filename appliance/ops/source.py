"""One picture of the running appliance, read from what its actors publish.

:class:`Observer` maps every region of the shared-memory directory read-only (``O_RDONLY``,
``PROT_READ``: a viewer or an exporter cannot disturb a ring, a telemetry region or the control
block, and its systemd unit needs no write access to them), copies what it needs and unmaps:

    control          kill switch (flag, epoch, acknowledgement, reason, source, TSC ack time),
                     risk state, engine pid, one line per registered actor (pid, core, loops,
                     heartbeat, its kill acknowledgement; a FIX gateway's kill stages and the
                     orders it still knows working)
    <ring>           head, capacity, writer pid / liveness, consumers (lag, lost, laps)
    telemetry.<a>    the actor's histograms (summary + raw rows) and counters / gauges
    status files     ``<state_dir>/status/<actor>.json`` (the engine's positions, PnL, open
                     orders, risk gate; a gateway's counters), ``<state_dir>/killswitch.json``

:meth:`Observer.collect` returns it as one JSON-able dict (``rows`` are numpy arrays). Nothing
here raises for a missing or half-started appliance: what is absent is said in ``problems``
(one line each) and the rest is shown.
"""
from __future__ import annotations

import logging
import mmap
import os
import re
import time
from pathlib import Path

import numpy as np

from appliance import actor as actor_mod
from appliance.config import ConfigError
from appliance.fix.wire import SECRET_TAGS
from appliance.transport import records, shm, telemetry

log = logging.getLogger(__name__)

KIND_NAMES = {1: "md", 2: "engine", 3: "fix", 4: "recorder", 5: "other"}

# FIX fields that never appear in clear in anything a view prints: fix.wire.SECRET_TAGS
# (Password, NewPassword, RawData signatures), in text with any separator (SOH, |, spaces).
_SECRET = re.compile(r"(?<![0-9])(" + "|".join(str(t) for t in SECRET_TAGS) + r")=[^\x01|\s]*")


def redact(text: str) -> str:
    """``text`` with the values of the FIX secret tags replaced by ``***``."""
    return _SECRET.sub(r"\1=***", text)


class RegionGone(Exception):
    """The region file vanished or is not an appliance region (any more)."""


class ReadOnlyRegion:
    """A region file mapped ``PROT_READ``; the header is validated like ``shm.attach`` does."""

    def __init__(self, path: Path, kind: int | None = None):
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise RegionGone(f"{path} vanished") from None
        except OSError as e:
            raise shm.ShmError(f"cannot open region {path}: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size < shm.HEADER_BYTES:
                raise RegionGone(f"{path} is too small to be an appliance region")
            try:
                self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
            except OSError as e:
                raise shm.ShmError(f"cannot map region {path}: {e.strerror}") from None
        finally:
            os.close(fd)
        self.mem = np.frombuffer(self.mm, dtype=np.uint8)
        w = self.mem[:shm.HEADER_BYTES].view(np.uint64)
        ok = (int(w[shm.W_MAGIC]) == shm.MAGIC and int(w[shm.W_LAYOUT]) == shm.LAYOUT_VERSION
              and int(w[shm.W_SIZE]) == size and (kind is None or int(w[shm.W_KIND]) == kind))
        if not ok:
            self.close()
            raise RegionGone(f"{path} is not a valid appliance region")
        self.words = w.copy()

    @property
    def kind(self) -> int:
        return int(self.words[shm.W_KIND])

    def header(self, nbytes: int) -> np.ndarray:
        """A private copy of the first ``nbytes`` bytes as uint64 words."""
        return self.mem[:nbytes].copy().view(np.uint64)

    def data(self, nbytes: int | None = None) -> np.ndarray:
        """A private copy of the data area (its first ``nbytes`` bytes)."""
        off = int(self.words[shm.W_DATA_OFFSET])
        end = int(self.words[shm.W_SIZE]) if nbytes is None else off + nbytes
        return self.mem[off:end].copy()

    def writer_pid(self) -> int:
        return int(self.words[shm.W_WRITER_PID])

    def writer_alive(self) -> bool:
        return shm.process_alive(int(self.words[shm.W_WRITER_PID]),
                                 int(self.words[shm.W_WRITER_LAUNCH_NS]))

    def close(self) -> None:
        self.mem = None
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass
            self.mm = None


class _Copied:
    """What ``telemetry.Telemetry`` needs of a region, over a private copy of its data."""

    def __init__(self, data: np.ndarray):
        self._data = data

    def data_view(self) -> np.ndarray:
        return self._data

    def close(self) -> None:
        self._data = None


def actor_venue(cfg, name: str) -> str:
    """The venue an actor works for: ``md.<venue>`` -> venue; ``fix.<session>`` -> the
    session's configured venue; else ""."""
    if name.startswith("md."):
        return name[3:]
    if name.startswith("fix.") and cfg is not None:
        sessions = (cfg.extra.get("fix") or {}).get("sessions") or {}
        s = sessions.get(name[4:])
        if isinstance(s, dict) and isinstance(s.get("venue"), str):
            return s["venue"]
    return ""


class Observer:
    """Reads the appliance's shared memory and status files (see the module docstring)."""

    def __init__(self, cfg, shm_dir: str | os.PathLike | None = None):
        self.cfg = cfg
        explicit = shm_dir or cfg.appliance.shm_dir or None
        self.dir = Path(shm.resolve_dir(explicit))
        self.state_dir = Path(cfg.appliance.state_dir)
        self._cal = None

    def _tsc_ns(self, dticks: int) -> int | None:
        """Raw TSC ticks -> ns (None without an invariant TSC: the stamps are then not a clock)."""
        from appliance.transport import clock
        if self._cal is None:
            self._cal = clock.calibration()
        if int(self._cal[clock.C_MODE]) != clock.MODE_TSC:
            return None
        return int(clock.tsc_to_ns_py(self._cal, int(dticks)))

    def collect(self) -> dict:
        from appliance.engine import killswitch
        now = time.time_ns()
        out = {"time_ns": now, "shm_dir": str(self.dir), "state_dir": str(self.state_dir),
               "config": getattr(self.cfg, "path", ""), "problems": [], "present": False,
               "control": False, "running": False, "kill": None, "risk_state": None,
               "engine_pid": 0, "actors": [], "rings": [], "telemetry": {}, "hops": [],
               "status": {}, "engine": None,
               "persisted_halt": killswitch.read_state(self.state_dir)}
        problems = out["problems"]
        if not self.dir.is_dir():
            problems.append(f"no shared-memory directory {self.dir}: nothing is running (start "
                            f"the appliance, or pass --shm-dir / set [appliance] shm_dir)")
            return out
        out["present"] = True
        try:
            paths = shm.list_regions(self.dir)
        except (shm.ShmError, OSError) as e:
            problems.append(f"cannot list {self.dir}: {getattr(e, 'strerror', None) or e}")
            return out
        for p in paths:
            try:
                if p.name == "control":
                    self._control(p, out)
                elif p.name.startswith(telemetry.PREFIX):
                    self._telemetry(p, out)
                else:
                    self._ring(p, out)
            except RegionGone:
                continue
            except shm.ShmError as e:
                problems.append(str(e))
        if not out["control"]:
            problems.append(f"no control block in {self.dir}: no actor has started there")
        names = [a["name"] for a in out["actors"]]
        names += [n for n in out["telemetry"] if n not in names]
        for name in names:
            st = actor_mod.read_status(self.state_dir, name)
            if st is not None:
                t = st.get("time_ns")
                st["age_s"] = (now - t) / 1e9 if isinstance(t, int) else None
                out["status"][name] = st
        out["engine"] = out["status"].get("engine")
        out["running"] = any(a["alive"] for a in out["actors"])
        if out["control"] and not out["running"]:
            problems.append(f"nothing is running in {self.dir}: every registered actor has "
                            f"stopped")
        out["hops"] = sorted(
            ({"actor": a, "hop": h, "venue": actor_venue(self.cfg, a), **s}
             for a, t in out["telemetry"].items() for h, s in t["hists"].items()),
            key=lambda x: (x["actor"], x["hop"]))
        return out

    def _control(self, path: Path, out: dict) -> None:
        from appliance.engine import killswitch
        r = ReadOnlyRegion(path, shm.KIND_CONTROL)
        try:
            raw = r.data(records.CONTROL_BLOCK.itemsize)
        finally:
            r.close()
        rec = raw.view(records.CONTROL_BLOCK)[0]
        now = time.time_ns()
        actors = []
        for i in range(records.MAX_ACTORS):
            a = rec["actors"][i]
            pid = int(a["pid"])
            if pid == 0:
                continue
            hb = int(a["heartbeat_ns"])
            kind = KIND_NAMES.get(int(a["kind"]), str(int(a["kind"])))
            line = {"index": i, "name": a["name"].decode(errors="replace"), "pid": pid,
                    "alive": shm.process_alive(pid, 0), "kind": kind,
                    "core": int(a["core"]), "loops": int(a["loops"]),
                    "heartbeat_age_s": (now - hb) / 1e9 if hb else None,
                    "kill_ack_epoch": int(a["kill_ack_epoch"]), "gw_kill": None}
            if kind == "fix" and "gw_kill" in (rec.dtype.names or ()):
                g = rec["gw_kill"][i]
                line["gw_kill"] = {k: int(g[k]) for k in g.dtype.names}
            actors.append(line)
        epoch, ack = int(rec["kill_epoch"]), int(rec["kill_ack_epoch"])
        kill = {"set": bool(rec["kill"]), "epoch": epoch, "ack_epoch": ack,
                "reason": redact(rec["kill_reason"].decode(errors="replace")),
                "source": killswitch.SOURCES.get(int(rec["kill_source"]), "none"),
                "time_ns": int(rec["kill_time_ns"]), "ack_ns": None}
        kt, at = int(rec["kill_tsc"]), int(rec["kill_ack_tsc"])
        if epoch and ack >= epoch and kt and at >= kt:
            kill["ack_ns"] = self._tsc_ns(at - kt)
        epid = int(rec["engine_pid"])
        engine_pid = epid if epid and shm.process_alive(epid, 0) else 0
        risk = records.RISK_STATE_NAMES.get(int(rec["risk_state"]), "?")
        if kill["set"] and risk != "HALTED":
            # the engine owns risk_state; the flag set and not yet acknowledged says so
            risk = "HALT REQUESTED" if engine_pid else "HALTED (no engine)"
        out.update(control=True, kill=kill, risk_state=risk, engine_pid=engine_pid,
                   actors=actors)

    def _telemetry(self, path: Path, out: dict) -> None:
        r = ReadOnlyRegion(path, shm.KIND_TELEMETRY)
        try:
            data = r.data(telemetry.TELEMETRY.itemsize)
            pid, alive = r.writer_pid(), r.writer_alive()
        finally:
            r.close()
        t = telemetry.Telemetry(_Copied(data))
        snap = t.snapshot()
        snap["pid"], snap["alive"] = pid, alive
        out["telemetry"][path.name[len(telemetry.PREFIX):]] = snap

    def _ring(self, path: Path, out: dict) -> None:
        from appliance.transport import ring
        r = ReadOnlyRegion(path)
        try:
            if r.kind != shm.KIND_RING:
                return
            hdr = r.header(ring.DATA_OFFSET)
            pid, alive = r.writer_pid(), r.writer_alive()
        finally:
            r.close()
        out["rings"].append({
            "name": path.name, "head": int(hdr[shm.W_HEAD]),
            "capacity": int(hdr[shm.W_CAPACITY]), "record_size": int(hdr[shm.W_RECORD_SIZE]),
            "writer_pid": pid, "writer_alive": alive, "retired": bool(hdr[shm.W_RETIRED]),
            "consumers": ring.consumers(hdr)})


def strategy_pnl(cfg, strategy: dict) -> tuple[float | None, str]:
    """A strategy's PnL in its quote asset (tick-lots x tick x lot) and that asset, when every
    leg shares one grid and one quote asset; (None, "") otherwise."""
    from decimal import Decimal
    grids = set()
    for leg in strategy.get("legs", []):
        try:
            inst = cfg.instrument(leg["venue"], leg["symbol"])
        except (ConfigError, KeyError, TypeError):
            return None, ""
        grids.add((inst.tick, inst.lot, inst.quote))
    tl = strategy.get("pnl_tl")
    if len(grids) != 1 or not isinstance(tl, int):
        return None, ""
    tick, lot, quote = grids.pop()
    return float(Decimal(tl) * Decimal(tick) * Decimal(lot)), quote


def position_units(cfg, instrument_key: str, lots: int) -> float | None:
    """A position in lots -> base-asset units (``venue:symbol`` from the registry)."""
    from decimal import Decimal
    venue, _, symbol = instrument_key.partition(":")
    try:
        inst = cfg.instrument(venue, symbol)
    except ConfigError:
        return None
    return float(Decimal(lots) * Decimal(inst.lot))

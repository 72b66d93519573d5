"""Kill switch (risk tier 3): the control-block flag, its persistence, and the CLI's side of it.

The flag lives in the shared control block (:mod:`appliance.transport.control`); every actor reads
it on every loop. A halt is also written to ``<state_dir>/killswitch.json`` (tmp file + fsync +
rename + directory fsync, so a crash leaves either the old or the new file, never a torn one), and
the engine reads that file at start: a restart after a halt comes up HALTED. Only a manual reset
(``appliance kill --reset --confirm``) clears both.

File format: ``{"halted": true, "reason": "...", "source": "cli"|"max_loss"|"persisted"|"recovery",
"time_ns": <unix ns>, "epoch": <kill epoch>}``. A file that cannot be parsed counts as HALTED:
failing safe is the point of a kill switch.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from appliance import fsutil

FILE_NAME = "killswitch.json"
SOURCES = {1: "cli", 2: "max_loss", 3: "persisted", 4: "recovery"}


class KillSwitchError(RuntimeError):
    """The kill switch state could not be read or written (message says where and why)."""


def state_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / FILE_NAME


def write_state(state_dir: str | os.PathLike, state: dict) -> Path:
    """Atomically and durably replace the persisted state with ``state`` (file 0640 in a 0750
    directory, whatever the umask)."""
    try:
        return fsutil.write_atomic(Path(state_dir) / FILE_NAME,
                                   (json.dumps(state, sort_keys=True) + "\n").encode(), 0o640,
                                   fsync=True)
    except OSError as e:
        raise KillSwitchError(f"cannot persist the kill switch in {state_dir}: "
                              f"{e.strerror or e}") from None


def read_state(state_dir: str | os.PathLike) -> dict:
    """The persisted state; ``{"halted": False}`` when there is none. An unreadable or corrupt
    file reads as halted (with the problem in ``reason``)."""
    path = state_path(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"halted": False}
    except OSError as e:
        return {"halted": True, "reason": f"kill switch file unreadable: {e.strerror}",
                "source": "persisted", "corrupt": True}
    try:
        st = json.loads(raw)
        if not isinstance(st, dict) or not isinstance(st.get("halted"), bool):
            raise ValueError("no boolean 'halted'")
    except ValueError as e:
        return {"halted": True, "reason": f"kill switch file corrupt ({e})", "source": "persisted",
                "corrupt": True}
    return st


def persist_halt(state_dir, reason: str, source: str, epoch: int) -> Path:
    return write_state(state_dir, {"halted": True, "reason": reason, "source": source,
                                   "time_ns": time.time_ns(), "epoch": int(epoch)})


def persist_reset(state_dir) -> Path:
    return write_state(state_dir, {"halted": False, "reset_time_ns": time.time_ns()})


def engine_alive(cb) -> int:
    """PID of the live engine registered in the control block, 0 if none."""
    from appliance.transport import shm

    pid = int(cb.rec["engine_pid"])
    if pid and shm.process_alive(pid, 0):
        return pid
    return 0


def confirmers(cb) -> dict:
    """Who can confirm a kill right now: the live engine (its pid, 0 if none) and every live FIX
    gateway registered in the control block (name -> actor line)."""
    from appliance.transport import control
    return {"engine": engine_alive(cb),
            "gateways": {a["name"]: a for a in cb.actors()
                         if a["kind"] == control.ACTOR_FIX and a["alive"]}}


def wake_confirmers(cb) -> None:
    """Wake the engine and every registered FIX gateway out of an idle sleep (``control.wake``),
    so they see a kill just set now, not when their back-off sleep ends. No liveness check first
    (it would cost the kill a millisecond): the wake signal is ignored by any other process."""
    from appliance.transport import control

    pids = [int(cb.rec["engine_pid"])] + [int(a["pid"]) for a in cb.rec["actors"]
                                           if a["kind"] == control.ACTOR_FIX]
    for pid in pids:
        if pid:
            control.wake(pid)


def kill(cb, state_dir, reason: str, timeout_s: float = 5.0, clock=time.monotonic,
         sleep=time.sleep, wake: bool = True) -> dict:
    """Set the kill flag (compiled: it stamps the TSC), wake the confirmers, persist it, then
    wait until every live
    confirmer has done its part: the engine acknowledges once it sends nothing new and has put a
    cancel for every working order it can cancel on the order ring (one whose replace is in
    flight follows when the venue answers the replace); each FIX gateway once nothing of its
    own is working at the venue. A kill counts as confirmed only if at least one confirmer exists and
    all of them confirmed within ``timeout_s``.

    Returns ``{"epoch", "confirmed", "engine_pid", "engine_acked", "engine_ack_ns",
    "gateways": {name: {"pid", "confirmed", "confirm_ns"}}, "waiting_for": [...],
    "persisted": path}``. ``engine_ack_ns`` is flag set -> engine acknowledgement on one clock
    (the TSC stamps in the control block), without this command's own start-up or persistence;
    a gateway's ``confirm_ns`` is flag set -> its confirmation (CLOCK_REALTIME)."""
    from appliance.transport import control

    epoch = cb.request_kill(reason, control.SOURCE_CLI)
    if wake:                   # (False: only ``appliance bench kill``'s comparison)
        wake_confirmers(cb)
    path = persist_halt(state_dir, reason, "cli", epoch)
    deadline = clock() + timeout_s
    while True:
        who = confirmers(cb)
        pid = who["engine"]
        engine_acked = bool(pid) and cb.ack_epoch >= epoch
        gws = {n: a["kill_ack_epoch"] >= epoch for n, a in who["gateways"].items()}
        waiting = ([] if engine_acked or not pid else ["engine"]) + [n for n, ok in gws.items()
                                                                   if not ok]
        done = (pid or gws) and not waiting
        if done or clock() >= deadline:
            break
        sleep(0.001)        # the figures come from the stamps, not from when this loop looked
    out = {"epoch": epoch, "kill_tsc": int(cb.rec["kill_tsc"]), "engine_pid": pid,
           "engine_acked": engine_acked,
           "engine_ack_ns": None, "gateways": {}, "waiting_for": waiting,
           "confirmed": bool(done), "persisted": str(path)}
    if engine_acked:
        from appliance.transport import clock as tsc_clock
        dt = int(cb.rec["kill_ack_tsc"]) - int(cb.rec["kill_tsc"])
        out["engine_ack_ns"] = tsc_clock.tsc_to_ns_py(tsc_clock.calibration(), dt) if dt > 0 else 0
    kill_ns = int(cb.rec["kill_time_ns"])
    for name, a in who["gateways"].items():
        gk = cb.rec["gw_kill"][a["index"]]
        ok = gws[name]
        out["gateways"][name] = {"pid": a["pid"], "confirmed": ok,
                                 "confirm_ns": (int(gk["done_time_ns"]) - kill_ns) if ok else None,
                                 "working": int(gk["working"])}
    return out


def reset(cb, state_dir) -> None:
    """Manual reset: clear the persisted halt, then the flag (the engine resumes)."""
    from appliance.transport import records
    from appliance.transport.control import RISK_STATE_OFF, store_release_py

    persist_reset(state_dir)
    cb.reset_kill()
    if not engine_alive(cb):
        store_release_py(cb.words, RISK_STATE_OFF, records.RISK_RUNNING)


def describe(r: dict, timeout_s: float) -> str:
    """One line for an operator on what :func:`kill` returned: who acknowledged in how long, or
    who did not (``appliance kill``, the kill key of ``appliance top``)."""
    where = f", persisted to {r['persisted']}" if r.get("persisted") else ""
    if r["confirmed"]:
        parts = []
        if r["engine_acked"]:
            parts.append(f"engine pid {r['engine_pid']} acknowledged in "
                         f"{r['engine_ack_ns'] / 1e6:.3f} ms")
        for name, g in r["gateways"].items():
            parts.append(f"{name} confirmed nothing working at the venue after "
                         f"{g['confirm_ns'] / 1e6:.3f} ms")
        return (f"HALTED (epoch {r['epoch']}): " + "; ".join(parts)
                + f" (flag -> acknowledgement{where})")
    if not r["engine_pid"] and not r["gateways"]:
        return (f"kill switch set (epoch {r['epoch']}{where}), but NOT confirmed: no engine and "
                "no FIX gateway is running, so nobody confirmed that nothing is working at the "
                "venue")
    return (f"kill switch set (epoch {r['epoch']}{where}) but NOT confirmed within "
            f"{timeout_s:g} s by: {', '.join(r['waiting_for'])}")

"""The shared control block: kill switch, its acknowledgement, risk state, actor heartbeats.

One small region (``control``) mapped by every actor and by the CLI. Layout: records.CONTROL_BLOCK
(line 0 the kill request, line 1 the engine's acknowledgement and risk state, line 2 the kill
reason, then one line per registered actor). There is no single writer: each field has exactly
one kind of writer (the CLI or risk for line 0, the engine for line 1, each actor for its own
line), so the region is opened without the writer lock.

Kill protocol: the requester writes reason/time/source, sets ``kill`` = 1 and then bumps
``kill_epoch`` (release), then wakes the confirmers (:func:`wake`: an actor idling in its back-off
sleep would otherwise look at the flag only when the sleep ends); every actor checks
``kill_requested`` on every loop; the engine halts, cancels, and writes ``kill_ack_epoch`` = the
epoch it saw (release); the CLI waits for that.
"""
from __future__ import annotations

import ctypes
import os
import signal
import time

import numpy as np
from numba import njit

from appliance.transport import records, shm
from appliance.transport.intrinsics import fetch_add, load_acquire, rdtsc, store_release

NAME = "control"
_OFF = {f: records.CONTROL_BLOCK.fields[f][1] for f in records.CONTROL_BLOCK.names}
KILL_OFF = _OFF["kill"]
KILL_EPOCH_OFF = _OFF["kill_epoch"]
KILL_ACK_OFF = _OFF["kill_ack_epoch"]
KILL_ACK_TIME_OFF = _OFF["kill_ack_time_ns"]
RISK_STATE_OFF = _OFF["risk_state"]
ACTORS_OFF = _OFF["actors"]
ACTOR_HB_OFF = records.ACTOR.fields["heartbeat_ns"][1]
ACTOR_LOOPS_OFF = records.ACTOR.fields["loops"][1]
ACTOR_KILL_ACK_OFF = records.ACTOR.fields["kill_ack_epoch"][1]
KILL_TSC_OFF = _OFF["kill_tsc"]
KILL_ACK_TSC_OFF = _OFF["kill_ack_tsc"]

SOURCE_CLI = 1
SOURCE_MAX_LOSS = 2
SOURCE_PERSISTED = 3
SOURCE_RECOVERY = 4      # the engine's restart recovery could not prove its state complete

# Sent to an actor's main thread to end its idle sleep now. Its default action is to ignore it,
# so a pid that is no longer an actor's (reused by another process) is not harmed; an actor
# installs a no-op handler (appliance.actor.stop_signals), which makes the compiled loop's
# nanosleep return early (EINTR) and poll the control block at once.
WAKE_SIGNAL = signal.SIGURG
_tgkill = getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)


def wake(pid: int) -> bool:
    """Wake actor process ``pid``'s loop (its main thread: thread id = pid) out of an idle
    back-off sleep. Returns False if there is no such process."""
    if pid <= 0:
        return False
    if _tgkill is not None:
        return _tgkill(int(pid), int(pid), int(WAKE_SIGNAL)) == 0
    try:
        os.kill(pid, WAKE_SIGNAL)
    except OSError:
        return False
    return True


ACTOR_MD = 1
ACTOR_ENGINE = 2
ACTOR_FIX = 3
ACTOR_RECORDER = 4
ACTOR_OTHER = 5


@njit(cache=True, nogil=True)
def kill_requested(words):
    """True while the kill switch is set (acquire load: one L1 hit when nothing changes)."""
    return load_acquire(words, KILL_OFF) != 0


@njit(cache=True, nogil=True)
def kill_epoch(words):
    return load_acquire(words, KILL_EPOCH_OFF)


@njit(cache=True, nogil=True)
def request_kill(words, source, now_ns):
    """Set the kill flag from compiled code (e.g. risk on max loss); returns the new epoch."""
    store_release(words, KILL_TSC_OFF, rdtsc())
    store_release(words, _OFF_KILL_TIME, now_ns)
    store_release(words, _OFF_KILL_SOURCE, source)
    store_release(words, KILL_OFF, 1)
    return fetch_add(words, KILL_EPOCH_OFF, 1) + np.uint64(1)


_OFF_KILL_TIME = _OFF["kill_time_ns"]
_OFF_KILL_SOURCE = _OFF["kill_source"]


@njit(cache=True, nogil=True)
def ack_kill(words, epoch, now_ns):
    """The engine has halted for ``epoch``: publish the acknowledgement (and its TSC)."""
    store_release(words, KILL_ACK_TSC_OFF, rdtsc())
    store_release(words, KILL_ACK_TIME_OFF, now_ns)
    store_release(words, KILL_ACK_OFF, epoch)


@njit(cache=True, nogil=True)
def actor_ack_kill(words, actor_idx, epoch):
    """Actor ``actor_idx`` has done its part of kill ``epoch`` (a FIX gateway: every order it
    knew is cancelled or confirmed gone at the venue)."""
    store_release(words, ACTORS_OFF + actor_idx * 64 + ACTOR_KILL_ACK_OFF, epoch)


@njit(cache=True, nogil=True)
def set_risk_state(words, state):
    store_release(words, RISK_STATE_OFF, state)


@njit(cache=True, nogil=True)
def heartbeat(words, actor_idx, now_ns):
    """Actor ``actor_idx`` is alive at ``now_ns`` (CLOCK_REALTIME ns); counts loops too."""
    base = ACTORS_OFF + actor_idx * 64
    store_release(words, base + ACTOR_HB_OFF, now_ns)
    store_release(words, base + ACTOR_LOOPS_OFF, load_acquire(words, base + ACTOR_LOOPS_OFF) + 1)


class ControlBlock:
    """The mapped control block. ``rec`` is the numpy record, ``words`` its uint64 view."""

    def __init__(self, region: shm.Region):
        self.region = region
        raw = region.data_view().reshape(-1)[:records.CONTROL_BLOCK.itemsize]
        self.words = raw.view(np.uint64)
        self.rec = raw.view(records.CONTROL_BLOCK)[0]

    @classmethod
    def open(cls, shm_dir=None) -> "ControlBlock":
        """Create the control block if missing, else attach to it (no writer lock: see above).
        A block of another layout (an older version of the appliance) is replaced: shm.create
        retires it, so processes still mapping it see ``writer_restarted``; the kill switch
        survives in its persisted file (the engine re-applies it at start)."""
        try:
            region = shm.attach(NAME, shm.KIND_CONTROL, shm_dir)
            if int(region.words[shm.W_RECORD_SIZE]) == records.CONTROL_BLOCK.itemsize:
                return cls(region)
            region.close()
            raise shm.ShmError("control block of another layout")
        except shm.ShmError:
            region = shm.create(NAME, shm.KIND_CONTROL, records.CONTROL_BLOCK.itemsize, 1,
                                4096, shm_dir, lock=False)
            region.writer = False  # nobody owns the block; closing must not clear writer info
            return cls(region)

    def request_kill(self, reason: str, source: int = SOURCE_CLI) -> int:
        self.rec["kill_reason"] = reason.encode()[:63]
        # load the compiled function first (on a scratch block: in a fresh process the first
        # call takes 0.4 s or more), so the wall-clock stamp is taken when the flag is set
        request_kill(np.zeros_like(self.words), source, 0)
        return int(request_kill(self.words, source, time.time_ns()))

    def reset_kill(self) -> None:
        self.rec["kill_reason"] = b""
        store_release_py(self.words, KILL_OFF, 0)

    @property
    def killed(self) -> bool:
        return bool(kill_requested(self.words))

    @property
    def epoch(self) -> int:
        return int(kill_epoch(self.words))

    @property
    def ack_epoch(self) -> int:
        return int(self.rec["kill_ack_epoch"])

    def register_actor(self, name: str, kind: int, core: int = -1) -> int:
        """Claim an actor line (reusing this name's line, or a dead actor's) and return its index."""
        actors = self.rec["actors"]
        free = None
        for i in range(records.MAX_ACTORS):
            a = actors[i]
            if a["name"] == name.encode()[:records.ACTOR_NAME_LEN]:
                free = i
                break
            if free is None and (a["pid"] == 0 or not shm.process_alive(int(a["pid"]), 0)):
                free = i
        if free is None:
            raise shm.ShmError(f"control block: all {records.MAX_ACTORS} actor lines are taken")
        a = actors[free]
        a["pid"] = os.getpid()
        a["kind"] = kind
        a["core"] = core
        a["loops"] = 0
        a["heartbeat_ns"] = time.time_ns()
        a["kill_ack_epoch"] = 0
        a["name"] = name.encode()[:records.ACTOR_NAME_LEN]
        return free

    def actors(self) -> list[dict]:
        out = []
        now = time.time_ns()
        for i in range(records.MAX_ACTORS):
            a = self.rec["actors"][i]
            if a["pid"] == 0:
                continue
            out.append({"index": i, "name": a["name"].decode(errors="replace"), "pid": int(a["pid"]),
                        "alive": shm.process_alive(int(a["pid"]), 0), "kind": int(a["kind"]),
                        "core": int(a["core"]), "loops": int(a["loops"]),
                        "kill_ack_epoch": int(a["kill_ack_epoch"]),
                        "heartbeat_age_ms": (now - int(a["heartbeat_ns"])) / 1e6})
        return out

    def close(self) -> None:
        self.words = self.rec = None
        self.region.close()


@njit(cache=True, nogil=True)
def _store(words, off, v):
    store_release(words, off, v)


def store_release_py(words: np.ndarray, off: int, v: int) -> None:
    _store(words, off, v)

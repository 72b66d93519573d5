"""The one actor lifecycle: every appliance process (md gateway, engine, FIX gateway, recorder,
exchange simulator) is a subclass of :class:`Actor` and runs :meth:`Actor.run`.

Lifecycle (``run``)::

    1. pin         sched_setaffinity to the core plan's core ([cores] actors."<name>"), if any
                   (:func:`pin`)
    2. signals     SIGTERM / SIGINT set ``stopping`` (:func:`stop_signals`); the loop looks at it
                   at least every
                   ``STOP_POLL_S`` (blocking calls in hooks must time out within that), so a stop
                   is honoured within a second
    3. warm()      compile and warm every kernel the actor will run, before it has any output or
                   connection: nothing live ever waits on a compile (a heartbeat is never late
                   because of one). From here on every kernel compiled or loaded from the
                   numba cache in the process is logged and counted (telemetry counter
                   ``live_compiles``; the sim fails a run with one): a warm-up that misses a
                   kernel shows, instead of stalling a loop
    4. open()      create the outputs first (other actors may be waiting for them), then wait for
                   the inputs (``wait_for`` polls, honouring ``stopping``)
    5. register    a line in the control block (name, kind, core, pid; heartbeats from now on)
                   and the telemetry region ``telemetry.<name>`` (``self.tm``)
    6. start()     go live: connect, subscribe, log on
    7. loop()      ``poll()`` until ``stopping``; after each poll the heartbeat; every
                   ``status_every_s`` the clock's UTC anchor re-taken (``clock.reanchor_all``),
                   ``periodic()`` and the status snapshot (``status()`` written atomically to
                   ``<state_dir>/status/<name>.json``, mode 0640) and ``counters()`` published to
                   telemetry. The publish is done a piece per ``tick()`` (``status_step``), so
                   the loop is never away for all of it at once. An actor whose I/O drives its
                   own loop overrides ``loop`` and calls ``tick()`` at least every ~100 ms, and
                   may call ``status_step()`` more often.
    8. close()     the status is written a last time (``live`` false), then the orderly stop
                   (cancel, log out, flush) and the regions are closed (the control block line
                   keeps the pid: ``appliance status`` shows the actor as stopped)

``poll`` does a bounded unit of work (a compiled step of about a millisecond, a socket poll) and
returns. Hooks raise :class:`ActorError` for a condition that stops the actor with a one-line
reason (exit status 2 before it went live, 1 after).

Processes outside the trading pipeline (the FIX acceptance acceptor, the venue simulator, the
Prometheus exporter, the transport demo) are not actors (no control-block line, no heartbeat)
but take the same lifecycle pieces from here: :func:`stop_signals` and :func:`pin`.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from appliance import fsutil
from appliance.transport import clock, control, shm, telemetry

STATUS_DIR = "status"
STOP_POLL_S = 0.2
CLOCK_STEP_WARN_NS = 1_000_000    # a re-anchor that moves UTC by more than this is logged
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_START = 2
# How long the loop thread may wait for the GIL while a helper thread (status writer, the
# engine's snapshot writer) runs Python: CPython hands the GIL over only every switch interval
# (5 ms by default), so a status write could hold the loop off its next poll, and the kill
# switch's acknowledgement, for up to 5 ms.
GIL_SWITCH_INTERVAL_S = 0.0001


class ActorError(RuntimeError):
    """The actor cannot start or go on (the message says why, in one line)."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_signals(on_stop):
    """While in the block, SIGTERM and SIGINT call ``on_stop()`` (it runs in the signal handler:
    set a flag or an Event, nothing more) instead of killing the process or raising
    KeyboardInterrupt, and ``control.WAKE_SIGNAL`` is caught (doing nothing): its arrival ends
    the compiled loop's idle sleep, so a kill is seen at once (``control.wake``). The previous
    handlers are restored on the way out. Outside the main
    thread (where Python cannot install handlers) this does nothing."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            old[s] = signal.signal(s, lambda *_: on_stop())
        old[control.WAKE_SIGNAL] = signal.signal(control.WAKE_SIGNAL, _woken)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _woken(*_) -> None:
    """``control.WAKE_SIGNAL``: nothing to do here; the interrupted sleep was the point."""


def pin(core) -> bool:
    """Pin the calling process to CPU ``core`` (sched_setaffinity); ``None`` leaves it where it
    is. Returns whether it pinned; OSError when the core cannot be used."""
    if core is None:
        return False
    os.sched_setaffinity(0, {int(core)})
    return True


def status_path(state_dir: str | os.PathLike, name: str) -> Path:
    return Path(state_dir) / STATUS_DIR / f"{name}.json"


def read_status(state_dir: str | os.PathLike, name: str) -> dict | None:
    try:
        with open(status_path(state_dir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Actor:
    """Base class of every actor process (see the module docstring for the lifecycle)."""

    kind = control.ACTOR_OTHER
    status_every_s = 0.5

    def __init__(self, cfg, name: str, log: logging.Logger | None = None):
        self.cfg = cfg
        self.name = name
        self.log = log or logging.getLogger(f"appliance.{name}")
        self.shm_dir = cfg.appliance.shm_dir or None
        self.state_dir = cfg.appliance.state_dir
        self.core = cfg.cores.actors.get(name)
        self.stopping = False
        self.live = False
        self.cb: control.ControlBlock | None = None
        self.tm: telemetry.Telemetry | None = None
        self._idx = -1
        self._words = None
        self._next_status = 0.0
        self._publishing = None          # the status publish in progress (_status_steps)
        self.started_ns = time.time_ns()
        self._writer = _LatestWriter(self._write)
        self.live_compiles = 0

    # -- hooks --------------------------------------------------------------------------------
    def warm(self) -> None:
        """Compile and warm every kernel this actor runs (before anything goes live)."""

    def open(self) -> None:
        """Create outputs, then wait for inputs (use ``wait_for``)."""

    def start(self) -> None:
        """Go live (connect, subscribe, log on)."""

    def poll(self) -> None:
        """One bounded unit of work; return within ~1 ms (at most STOP_POLL_S when idle)."""
        time.sleep(STOP_POLL_S)

    def periodic(self) -> None:
        """Housekeeping every ``status_every_s`` (before the status is written)."""

    def status(self) -> dict:
        """The actor's status snapshot (JSON-able)."""
        return {}

    def counters(self) -> dict:
        """Python-side counters to publish in telemetry (name -> int, monotonic)."""
        return {}

    def gauges(self) -> dict:
        """Python-side levels to publish in telemetry (name -> int: open orders, books valid)."""
        return {}

    def close(self) -> None:
        """Orderly stop; release what ``open`` / ``start`` took."""

    # -- helpers for hooks --------------------------------------------------------------------
    def request_stop(self, *_args) -> None:
        self.stopping = True

    def wait_for(self, what: str, attempt, timeout_s: float, interval_s: float = 0.05):
        """Call ``attempt()`` until it returns something other than None (it may raise
        shm.ShmError / FileNotFoundError meaning "not yet"); ActorError after ``timeout_s`` or
        on a stop request."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            try:
                r = attempt()
                if r is not None:
                    return r
            except (shm.ShmError, FileNotFoundError) as e:
                last = e
            if self.stopping:
                raise ActorError(f"stopped while waiting for {what}")
            if time.monotonic() >= deadline:
                raise ActorError(f"{what} is not there after {timeout_s:g} s"
                                 + (f" ({last})" if last else ""))
            time.sleep(interval_s)

    def beat(self) -> None:
        """Heartbeat in the control block (cheap: a compiled store)."""
        if self._words is not None:
            control.heartbeat(self._words, self._idx, time.time_ns())

    def tick(self, force: bool = False) -> None:
        """Heartbeat, and the status / counters when their period is due, a piece per call
        (:meth:`status_step`); ``force``: the whole status now."""
        self.beat()
        if force:
            self._run_steps(self._status_steps(periodic=True))
        else:
            self.status_due()
            self.status_step()

    def status_due(self) -> bool:
        """Start the periodic status publish when its period is due and none is in progress;
        True while one is in progress (:meth:`status_step` does it a piece at a time)."""
        if self._publishing is None:
            now = time.monotonic()
            if now < self._next_status:
                return False
            self._next_status = now + self.status_every_s
            self._publishing = self._status_steps(periodic=True)
        return True

    def status_step(self) -> bool:
        """One piece of the status publish in progress (each piece ~0.1 ms of Python or less,
        so a busy loop that comes back between pieces never waits for a whole publish: ~1 ms
        of Python in one go, measured in the one-process loop); False when none is in
        progress."""
        steps = self._publishing
        if steps is None:
            return False
        try:
            next(steps)
        except StopIteration:
            self._publishing = None
        return True

    def publish_status(self, wait: bool = False) -> None:
        """Counters and gauges into telemetry, the status snapshot to its file, whole, now (a
        periodic publish in progress is finished first). The snapshot is taken here, in the
        actor's loop; the file is written by a background thread (a file write costs
        milliseconds the loop must not lose), or here with ``wait``."""
        self._run_steps(self._status_steps(periodic=False, wait=wait))

    def _run_steps(self, steps) -> None:
        if self._publishing is not None:
            for _ in self._publishing:
                pass
            self._publishing = None
        for _ in steps:
            pass

    def _status_steps(self, periodic: bool, wait: bool = False):
        """The status publish as a generator, a piece per ``next``: with ``periodic`` the
        clock's re-anchor and :meth:`periodic` first; then the counters, the gauges, the
        snapshot, and its file (:meth:`_emit`)."""
        if periodic:
            step = clock.reanchor_all()           # UTC timestamps follow the wall clock
            if abs(step) > CLOCK_STEP_WARN_NS:
                self.log.warning("%s: the wall clock moved %+.3f ms against the TSC; UTC "
                                 "timestamps re-anchored", self.name, step / 1e6)
            self.periodic()
            yield
        try:
            if self.tm is not None:
                self.tm.set_counters({**self.counters(), "live_compiles": self.live_compiles})
                yield
                self.tm.set_counters(self.gauges(), telemetry.KIND_GAUGE)
                yield
            st = {"name": self.name, "pid": os.getpid(), "time_ns": time.time_ns(),
                  "started_ns": self.started_ns, "live": self.live}
            st.update(self.status())
            yield
            data = json.dumps(st, default=str).encode()
        except telemetry.TelemetryError as e:
            self.log.warning("%s: status not published: %s", self.name, e)
            return
        self._emit(status_path(self.state_dir, self.name), data, wait)

    def _emit(self, path, data: bytes, wait: bool) -> None:
        """``data`` to the file ``path``: by the writer thread, or here with ``wait``."""
        if wait:
            self._writer.flush()
            self._write(path, data)
        else:
            self._writer.put(path, data)

    def _write(self, path, data: bytes) -> None:
        try:
            fsutil.write_atomic(path, data, 0o640)
        except OSError as e:
            self.log.warning("%s: status not written to %s: %s", self.name, path, e)

    # -- the lifecycle ------------------------------------------------------------------------
    def _pin(self) -> None:
        try:
            if pin(self.core):
                self.log.info("%s: pinned to core %d", self.name, self.core)
        except OSError as e:
            raise ActorError(f"cannot pin to core {self.core} (cores.actors.{self.name}): "
                             f"{e.strerror}") from None

    def _watch_compiles(self) -> None:
        """Count and log every kernel compiled, or loaded from the numba cache, from now on
        (lifecycle step 3): either one stalls the loop (a load costs milliseconds)."""
        if "numba" not in sys.modules:
            return
        from numba.core.registry import CPUDispatcher

        CPUDispatcher._appliance_watched = self
        if getattr(CPUDispatcher, "_appliance_watching", False):
            return
        compile_ = CPUDispatcher.compile
        nested = threading.local()          # a compile's own callees are not counted again

        def compile(disp, sig):
            actor = CPUDispatcher._appliance_watched
            depth = getattr(nested, "depth", 0)
            if depth == 0 and actor is not None:
                from numba.core import sigutils
                args, _ = sigutils.normalize_signature(sig)
                if tuple(args) not in disp.overloads:
                    actor.live_compiles += 1
                    f = disp.py_func
                    actor.log.warning("%s: kernel %s.%s%s compiled or loaded after the warm-up "
                                      "(the warm-up misses it; this stalls the loop)", actor.name,
                                      f.__module__, f.__qualname__, tuple(args))
            nested.depth = depth + 1
            try:
                return compile_(disp, sig)
            finally:
                nested.depth = depth

        CPUDispatcher.compile = compile
        CPUDispatcher._appliance_watching = True

    def _unwatch_compiles(self) -> None:
        disp = sys.modules.get("numba.core.registry")
        if disp is not None and getattr(disp.CPUDispatcher, "_appliance_watched", None) is self:
            disp.CPUDispatcher._appliance_watched = None

    @staticmethod
    def _freeze_heap() -> None:
        """Going live: what the warm-up and the start made (modules, compiled code, books,
        sessions) collected once and then frozen out of the cyclic collector's scans, so that a
        full collection in the live loop walks only what was made since (a full collection of
        the one-process loop's heap took 54-66 ms, measured at its start-up). Unfrozen when the
        actor stops."""
        gc.collect()
        gc.freeze()

    def _register(self) -> None:
        self.cb = control.ControlBlock.open(self.shm_dir)
        self._idx = self.cb.register_actor(self.name, self.kind,
                                           -1 if self.core is None else int(self.core))
        self._words = self.cb.words
        self.tm = telemetry.Telemetry.create(self.name, self.shm_dir)

    def loop(self) -> None:
        while not self.stopping:
            self.poll()
            self.tick()

    def run(self) -> int:
        """Run the whole lifecycle; returns the exit status (never raises ActorError)."""
        rc = EXIT_OK
        opened = False
        with stop_signals(self.request_stop):
            try:
                self._pin()
                sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
                from appliance.transport import warm as transport_warm
                transport_warm.warm()               # the lifecycle's own kernels
                self.warm()
                self._watch_compiles()
                if self.stopping:
                    return EXIT_OK
                opened = True
                self.open()
                self._register()
                self.start()
                self.live = True
                self.tick(force=True)
                self._freeze_heap()
                self.log.info("%s: live (pid %d%s)", self.name, os.getpid(),
                              f", core {self.core}" if self.core is not None else "")
                self.loop()
            except ActorError as e:
                self.log.error("%s: %s", self.name, e)
                rc = EXIT_FAILED if self.live else EXIT_CANNOT_START
            except shm.ShmError as e:
                self.log.error("%s: %s", self.name, e)
                rc = EXIT_FAILED if self.live else EXIT_CANNOT_START
            finally:
                was_live, self.live = self.live, False
                try:
                    if was_live:
                        self.publish_status(wait=True)   # the last picture, before close() releases it
                    if opened:
                        self.close()
                except ActorError as e:
                    self.log.error("%s: on stop: %s", self.name, e)
                    rc = rc or EXIT_FAILED
                finally:
                    self._writer.close()
                    gc.unfreeze()           # an actor run in-process leaves the heap as it was
                    self._release()
                    self._unwatch_compiles()
        self.log.info("%s: stopped (exit %d)", self.name, rc)
        return rc

    def _release(self) -> None:
        if self.cb is not None:
            self._words = None
            self.cb.close()
            self.cb = None
        if self.tm is not None:
            self.tm.close()
            self.tm = None


class _LatestWriter:
    """A background thread writing, per file, the latest content it was given (older content of
    a file not yet written is superseded).

    The thread stays on its actor's core. Moved to the other CPUs (tried with the one-process
    loop pinned, ``appliance bench tick-to-trade --layout one``, three runs each way, alternated)
    it took the GIL from another CPU while the loop came back to Python, the loop blocked on the
    GIL twice as often (53 against 26 times a second), and tick_to_trade p50 rose from 1.44-1.52
    to 2.26-2.39 us (a guess at why, not proven: a loop that sleeps leaves its core idle, and a
    VM's idle core comes back cold; one preempted by the writer keeps it busy)."""

    def __init__(self, write):
        self._write = write
        self._cv = threading.Condition()
        self._items: dict = {}
        self._busy = False
        self._closed = False
        self._thread = None

    def put(self, path, data: bytes) -> None:
        with self._cv:
            self._items[str(path)] = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="status-writer",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._closed:
                    self._cv.wait()
                if not self._items:
                    return
                items, self._items = self._items, {}
                self._busy = True
            try:
                for path, data in items.items():
                    self._write(path, data)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self) -> None:
        """Wait until what was put is written."""
        with self._cv:
            while (self._items or self._busy) and self._thread is not None:
                self._cv.wait(1.0)

    def close(self) -> None:
        self.flush()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(5)

"""The recorder: a passive consumer of rings that journals every record it sees.

For each ring the recorder attaches as consumer ``recorder`` (``start="oldest"``) and tells the
ring's :class:`JournalWriter` the cursor's starting sequence, so every record from there on is
either journalled or, when the producer laps the recorder, covered by a GAP frame with the exact
first missing sequence and count. The writer derives gaps from the records' own sequences; the
ring's cursor counts the same loss independently (``cur[CUR_LOST]``) and the two are cross-checked
(``Recorder.stats()`` shows both; a disagreement is logged as an error).

A recorder that starts where a previous run left a journal of the ring resumes right after the
last journalled sequence when the ring still holds it (no duplicates, no hole); records the ring
overwrote in between are journalled as a GAP. (A ring re-created with a fresh sequence that has
already passed the old resume point cannot be told apart from the old ring; the journal then
skips its records before that point.)

One step drains up to ``batch`` records per ring with the compiled ``ring.drain`` into a batch
buffer and hands the batch to the writer: Python works per batch, never per record. When every
ring is idle the recorder flushes partial frames older than ``flush_ms`` (so a crash loses at most
that much) and backs off with short sleeps: the recorder is not latency critical and must not take
a core from the actors on a small host. Rings that do not exist yet are retried every
``attach_retry_ms``; a ring whose writer restarted is re-attached and continues where it was.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from appliance.actor import Actor, ActorError
from appliance.transport import control, shm
from appliance.transport import ring as ringmod
from .reader import next_seq_after
from .writer import JournalWriter

log = logging.getLogger("appliance.recorder")

CONSUMER_NAME = "recorder"
IDLE_SLEEP_MIN_S = 50e-6
IDLE_SLEEP_MAX_S = 2e-3


@dataclass
class _Tape:
    name: str
    reader: object = None            # ring.RingReader while attached
    writer: JournalWriter | None = None
    buf: np.ndarray | None = None
    lost_base: int = 0               # ring-side lost counts of earlier attachments
    pending_since: float | None = None   # when the writer's oldest unwritten record arrived
    next_attach: float = 0.0
    next_check: float = 0.0          # when to check next that the region file is still ours
    missing_logged: bool = False


def _region_replaced(r) -> bool:
    """True when the ring's file was removed or re-created since we mapped it."""
    try:
        st = os.stat(r.region.path)
    except FileNotFoundError:
        return True
    mine = os.fstat(r.region.fd)
    return (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev)


class Recorder:
    """Journals ``rings`` into ``journal_dir``. Use :meth:`run` (until :meth:`stop`), or drive
    :meth:`step` yourself; :meth:`close` drains what is left, writes END frames and fsyncs."""

    def __init__(self, rings, journal_dir, *, shm_dir=None, rotate_bytes: int = 256 << 20,
                 zstd_level: int = 3, frame_records: int = 4096, batch: int | None = None,
                 flush_ms: int = 200, attach_retry_ms: int = 1000, clock=time.monotonic):
        rings = list(dict.fromkeys(rings))
        if not rings:
            raise ValueError("the recorder needs at least one ring name")
        self.journal_dir = os.fspath(journal_dir)
        self.shm_dir = shm_dir
        self._writer_args = dict(rotate_bytes=rotate_bytes, zstd_level=zstd_level,
                                 frame_records=frame_records)
        self.batch = int(batch or frame_records)
        if self.batch <= 0:
            raise ValueError(f"batch {batch}: must be > 0")
        self.flush_s = flush_ms / 1000.0
        self.attach_retry_s = attach_retry_ms / 1000.0
        self._clock = clock
        self._tapes = [_Tape(name) for name in rings]
        self._stop = False
        self._idle_sleep = IDLE_SLEEP_MIN_S
        self.closed = False

    # --- attachment -----------------------------------------------------------------------------
    def _attach(self, t: _Tape, now: float) -> bool:
        if now < t.next_attach:
            return False
        try:
            r = ringmod.RingReader.attach(t.name, consumer=CONSUMER_NAME, start=ringmod.START_OLDEST,
                                          shm_dir=self.shm_dir)
        except shm.ShmError as e:
            t.next_attach = now + self.attach_retry_s
            if not t.missing_logged:
                log.warning("ring %s not available yet (%s); retrying every %.1f s", t.name, e,
                            self.attach_retry_s)
                t.missing_logged = True
            return False
        rs = int(r.data.shape[1])
        if t.writer is None:
            try:
                t.writer = JournalWriter(self.journal_dir, t.name, rs, **self._writer_args)
            except BaseException:
                r.close()
                raise
            start = r.position
            resume = next_seq_after(self.journal_dir, t.name)
            if resume is not None and resume <= int(ringmod.head(r.hdr)):
                # a previous run journalled this ring up to ``resume``: continue right there
                # (records the ring no longer holds become a GAP frame, nothing is duplicated)
                start = resume
                if resume >= r.position:
                    r.cur[ringmod.CUR_POS] = resume
                else:   # overwritten while no recorder ran: lost, and journalled as a GAP
                    t.lost_base += r.position - resume
                log.info("ring %s: resuming the journal at sequence %d", t.name, resume)
            t.writer.start_at(start)
        elif t.writer.record_size != rs:
            log.error("ring %s: record size changed from %d to %d; not recording it",
                      t.name, t.writer.record_size, rs)
            r.close()
            t.next_attach = now + self.attach_retry_s
            return False
        elif t.writer.next_seq is not None:
            # re-attached after a writer restart: continue where we were if the ring still has it
            want = t.writer.next_seq
            if int(r.position) <= want <= int(ringmod.head(r.hdr)):
                r.cur[ringmod.CUR_POS] = want
            elif want < int(r.position):      # overwritten in between: the writer journals a GAP
                t.lost_base += int(r.position) - want
        t.reader = r
        t.buf = np.zeros((self.batch, rs), np.uint8)
        t.pending_since = self._clock() if t.writer.pending else None
        t.missing_logged = False
        log.info("recording ring %s (record size %d, capacity %d) from sequence %d", t.name, rs,
                 r.data.shape[0], r.position)
        return True

    def _detach(self, t: _Tape) -> None:
        if t.reader is not None:
            t.lost_base += t.reader.lost
            t.reader.close()
            t.reader = None

    # --- the loop -------------------------------------------------------------------------------
    def step(self, max_records: int | None = None) -> int:
        """Drain each ring once (up to ``max_records`` per ring, at most the batch size) into the
        journal; returns the number of records journalled."""
        now = self._clock()
        limit = self.batch if max_records is None else max(0, min(int(max_records), self.batch))
        total = 0
        for t in self._tapes:
            if t.reader is None and not self._attach(t, now):
                continue
            r = t.reader
            replaced = False
            if now >= t.next_check:
                t.next_check = now + self.attach_retry_s
                replaced = _region_replaced(r)
            if replaced or r.writer_restarted():
                log.warning("ring %s: %s; re-attaching", t.name,
                            "region file was replaced" if replaced else "writer restarted")
                total += self._drain_ring(t, self.batch)
                self._detach(t)
                if not self._attach(t, now):
                    continue
                r = t.reader
            n = int(ringmod.drain(r.hdr, r.data, r.cur, t.buf, limit))
            if n:
                frames = t.writer.frames
                t.writer.append(t.buf[:n])
                total += n
                if t.writer.frames != frames or t.pending_since is None:
                    t.pending_since = now if t.writer.pending else None
            if t.pending_since is not None and now - t.pending_since >= self.flush_s:
                t.writer.flush()      # a slow trickle never waits longer than flush_ms on disk
                t.pending_since = None
        return total

    def _drain_ring(self, t: _Tape, limit: int) -> int:
        r = t.reader
        total = 0
        while True:
            n = int(ringmod.drain(r.hdr, r.data, r.cur, t.buf, limit))
            if n == 0:
                return total
            t.writer.append(t.buf[:n])
            total += n

    def poll(self) -> int:
        """``step``, or a short sleep growing to IDLE_SLEEP_MAX_S while the rings are quiet (the
        recorder is a passive consumer: it never competes with the hot actors for a core)."""
        n = self.step()
        if n:
            self._idle_sleep = IDLE_SLEEP_MIN_S
        else:
            time.sleep(self._idle_sleep)
            self._idle_sleep = min(self._idle_sleep * 2, IDLE_SLEEP_MAX_S)
        return n

    def run(self) -> None:
        """Record until :meth:`stop` is called (e.g. from a signal handler), then close."""
        try:
            while not self._stop:
                self.poll()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (safe from a signal handler)."""
        self._stop = True

    def close(self) -> None:
        """Drain what the rings still hold, flush, END every file, fsync, detach."""
        if self.closed:
            return
        self.closed = True
        errors = []
        for t in self._tapes:
            try:
                if t.reader is not None:
                    self._drain_ring(t, self.batch)
                    self._check_lost(t)
            except Exception as e:  # noqa: BLE001 - close every other ring's journal regardless
                errors.append(e)
                log.error("ring %s: final drain failed: %s", t.name, e)
            finally:
                if t.writer is not None:
                    t.writer.close()
                self._detach(t)
        if errors:
            raise errors[0]

    def _check_lost(self, t: _Tape) -> None:
        ring_lost = t.lost_base + (t.reader.lost if t.reader is not None else 0)
        if t.writer is not None and t.writer.lost != ring_lost:
            log.error("ring %s: journal GAP frames account for %d lost records but the ring cursor "
                      "counted %d", t.name, t.writer.lost, ring_lost)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> list[dict]:
        out = []
        for t in self._tapes:
            d = t.writer.stats() if t.writer is not None else {"ring": t.name, "records": 0, "lost": 0}
            d["attached"] = t.reader is not None
            d["ring_lost"] = t.lost_base + (t.reader.lost if t.reader is not None else 0)
            d["files_written"] = [str(p) for p in t.writer.paths] if t.writer is not None else []
            out.append(d)
        return out


class RecorderActor(Actor):
    """The recorder actor (``appliance recorder``): a :class:`Recorder` in the actor lifecycle."""

    kind = control.ACTOR_RECORDER

    def __init__(self, cfg, rings, journal_dir, *, shm_dir=None, flush_ms: int = 200):
        super().__init__(cfg, CONSUMER_NAME, log)
        if shm_dir:
            self.shm_dir = shm_dir
        self.rec = Recorder(rings, journal_dir, shm_dir=self.shm_dir,
                            rotate_bytes=cfg.journal.rotate_bytes,
                            zstd_level=cfg.journal.zstd_level,
                            frame_records=cfg.journal.frame_records, flush_ms=flush_ms)

    def poll(self) -> None:
        self.rec.poll()

    def status(self) -> dict:
        return {"rings": self.rec.stats()}

    def counters(self) -> dict:
        out = {}
        for s in self.rec.stats():
            out[f"{s['ring']}.records"] = int(s.get("records", 0))
            out[f"{s['ring']}.lost"] = int(s.get("lost", 0))
        return out

    def close(self) -> None:
        try:
            self.rec.close()
        except (OSError, ValueError) as e:
            raise ActorError(f"closing the journal: {e}") from None
        for s in self.rec.stats():
            self.log.info("recorder: ring %s: %d records, %d lost in %d gap(s), files %s",
                          s["ring"], s.get("records", 0), s.get("lost", 0), s.get("gaps", 0),
                          ", ".join(s["files_written"]) or "none")

"""SPMC broadcast seqlock ring (Mantra-style): one producer, any number of consumers.

The producer never waits for anyone; every consumer sees every record unless it falls a whole
ring behind, in which case it knows it was lapped and exactly how many records it lost. Consumers
attach and detach at will, from any process, starting at the oldest intact record or the latest.

Memory layout of a ring region (``shm`` header first; byte offsets)::

    0     line 0   static geometry (magic, layout, kind, record size, capacity, ...)  read-only
    64    line 1   writer identity (pid, launch time, generation)         written at writer open
    128   line 2   head: sequence of the next record to publish   written by the producer only;
                   the doorbell (below): SLEEP (consumers), BELL and RUNG (the producer)
    192   lines 3..34: consumer table, one line per consumer: state, pid, launch time, position,
                   lost, laps, name. Each line is written only by its consumer (its position on
                   every read, which stays in that core's cache) and read by ``shm ls``.
    4096  data: ``capacity`` slots of ``record_size`` bytes (64 or 128), slot = seq % capacity.
                   Word 0 of each slot is the seqlock word ``ver`` (records.py header):
                   2*seq+1 while record ``seq`` is written, 2*seq+2 once it is published.

Writer (``publish``): ver = 2s+1 (relaxed); release fence; payload (relaxed stores);
ver = 2s+2 (release); head = s+1 (release). Reader (``poll``) at position p: v1 = ver (acquire);
v1 == 2p+2 -> copy payload (relaxed loads), acquire fence, v2 = ver; v2 == v1 -> got record p.
v1 < 2p+2 -> not yet published (or being written). v1 > 2p+2 or v2 != v1 -> lapped: the reader
jumps to head - capacity + 1, the oldest record that cannot be being overwritten, and adds the
skipped count to its ``lost`` counter. On x86 all of this is plain ``mov``s; the orderings only
stop the compiler from reordering (tests/transport/test_ring_asm.py checks the emitted order).

Doorbell (for consumers that sleep when idle: the ``backoff`` wait of a shared host). A consumer
about to sleep reads BELL into its futex_waitv vector, sets SLEEP (``arm``), issues a full fence,
looks at every input ring once more and only then sleeps in ``futex_waitv`` on the BELL words of
all its rings, with the back-off's sleep as the timeout (``wait.sleep_bells``). A producer calls
``notify`` after a batch (``RingWriter.publish`` does it for each record): one load of SLEEP, on
the head line it has just written; when set, it clears it, bumps BELL and FUTEX_WAKEs the sleepers
(a syscall, only while a consumer sleeps). The producer issues no fence between its head store and
that load: in the rare race (a consumer arms while the head store is still in the store buffer)
the consumer sleeps its timeout, which is what it did before the doorbell existed. Spinning
consumers never arm, so a spinning layout pays one load per batch. Cross-process: the futex is
shared (not FUTEX_PRIVATE), on the ring's mapped header. Without futex_waitv (Linux < 5.16) the
sleep is the plain nanosleep.

Several producers, one consumer: one ring per producer (each md gateway owns its ring) merged by
the consumer polling each ring in turn. No producer ever contends with another for a cache line:
an MPMC claim (fetch_add on a shared head) would bounce that line between the gateways' cores on
every record and let a stalled producer block the slot order for everybody. The cost of the merge
is one extra acquire load per empty ring per poll (measured by ``appliance bench ring``).

Compiled functions return codes, never raise: ``poll`` returns 1 (record copied) or 0 (none).
"""
from __future__ import annotations

import fcntl
import os

import numpy as np
from numba import njit

from appliance.transport import records, shm, wait
from appliance.transport.intrinsics import (FUTEX_32, fence_release, fence_acquire, fence_seq_cst,
                                          load_acquire, load_relaxed, sys_futex_wake,
                                          rdtsc, store_relaxed, store_release)

MAX_CONSUMERS = 32
CONSUMER_TABLE = shm.HEADER_BYTES    # byte offset of the consumer table: right after the header
DATA_OFFSET = 4096
HEAD_OFF = shm.W_HEAD * 8            # byte offset of the head word (line 2)
VER_OFF = records.VER_OFF            # the seqlock word of a slot
PUBLISH_TSC_OFF = records.PUBLISH_TSC_OFF
# the doorbell, on the head line (module docstring)
SLEEP_OFF = HEAD_OFF + 8             # != 0: a consumer may sleep on BELL (consumers write it)
BELL_OFF = HEAD_OFF + 16             # futex word (low 32 bits), bumped by the producer's notify
RUNG_OFF = HEAD_OFF + 24             # notifies that woke sleepers, total (the producer's count)
BELL_COLS = 3                        # a futex_waitv row: value expected, address, flags

# consumer cursor words (8 words = one cache line per consumer)
CUR_STATE = 0      # 0 free, 1 attached
CUR_PID = 1
CUR_LAUNCH = 2
CUR_POS = 3        # next sequence to read
CUR_LOST = 4       # records lost to lapping, total
CUR_LAPS = 5       # times lapped
CUR_NAME = 6       # 16 bytes of name (words 6, 7)
CUR_WORDS = 8

START_OLDEST = "oldest"
START_LATEST = "latest"


def _check_layout() -> None:
    line = records.CACHE_LINE
    # the head word is alone on its own line of the shm header, before the consumer table
    assert HEAD_OFF % line == 0 and HEAD_OFF + line <= CONSUMER_TABLE, (HEAD_OFF, CONSUMER_TABLE)
    # the doorbell words share the head's line, nothing else does
    assert HEAD_OFF < SLEEP_OFF < BELL_OFF < RUNG_OFF < HEAD_OFF + line
    # one cache line per consumer cursor (each written only by its consumer), lines aligned
    assert CUR_WORDS * 8 == line and CONSUMER_TABLE % line == 0, (CUR_WORDS, CONSUMER_TABLE)
    assert CUR_NAME + 2 <= CUR_WORDS
    # the consumer table ends before the data; slots start on a cache line
    assert CONSUMER_TABLE + MAX_CONSUMERS * CUR_WORDS * 8 <= DATA_OFFSET, DATA_OFFSET
    assert DATA_OFFSET % line == 0
    # publish/poll: the seqlock word is word 0 of a slot, the rest is copied as 64-bit words
    # from word 1, and publish_tsc is one of those words
    assert VER_OFF == 0 and records.HEADER.fields["ver"][0].itemsize == 8
    assert PUBLISH_TSC_OFF % 8 == 0 and 8 <= PUBLISH_TSC_OFF < records.HEADER_SIZE
    # every record kind fits the ring geometry (_geometry_ok)
    for rs in (records.MD_RECORD_SIZE, records.ORDER_RECORD_SIZE, records.EXEC_RECORD_SIZE):
        assert rs > 0 and rs % line == 0 and rs >= records.HEADER_SIZE, rs


_check_layout()


# ---------------------------------------------------------------------------------------- numba

@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def begin_write(hdr, data):
    """Start writing the next record in place: returns its slot; fill ``data[slot]`` (not ``ver``),
    then call ``end_write``."""
    s = load_relaxed(hdr, HEAD_OFF)
    slot = s & np.uint64(data.shape[0] - 1)
    store_relaxed(data, slot * np.uint64(data.shape[1]), s * np.uint64(2) + np.uint64(1))
    fence_release()
    return np.int64(slot)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def end_write(hdr, data, slot):
    """Publish the record begun by ``begin_write``: stamp publish_tsc, release it, advance head."""
    return end_write_at(hdr, data, slot, rdtsc())


@njit(cache=True, nogil=True, _nrt=False, inline='always', no_cpython_wrapper=True)
def end_write_at(hdr, data, slot, tsc):
    """``end_write`` with a publish_tsc the caller just read (one clock read for the stamp and
    the caller's own latency figure)."""
    s = load_relaxed(hdr, HEAD_OFF)
    off = np.uint64(slot) * np.uint64(data.shape[1])
    store_relaxed(data, off + np.uint64(PUBLISH_TSC_OFF), tsc)
    store_release(data, off, s * np.uint64(2) + np.uint64(2))
    store_release(hdr, HEAD_OFF, s + np.uint64(1))
    return s


@njit(cache=True, nogil=True, _nrt=False)
def publish(hdr, data, rec):
    """Copy one record (uint8[record_size]) into the next slot and publish it; returns its seq."""
    s = load_relaxed(hdr, HEAD_OFF)
    rs = np.uint64(data.shape[1])
    off = (s & np.uint64(data.shape[0] - 1)) * rs
    store_relaxed(data, off, s * np.uint64(2) + np.uint64(1))
    fence_release()
    w = np.uint64(8)
    while w < rs:
        store_relaxed(data, off + w, load_relaxed(rec, w))
        w += np.uint64(8)
    store_relaxed(data, off + np.uint64(PUBLISH_TSC_OFF), rdtsc())
    store_release(data, off, s * np.uint64(2) + np.uint64(2))
    store_release(hdr, HEAD_OFF, s + np.uint64(1))
    return s


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def notify(hdr):
    """After publishing a batch: wake the consumers sleeping on this ring's doorbell, if any armed
    it (module docstring). One load when nobody sleeps. Returns True when it rang."""
    if load_relaxed(hdr, SLEEP_OFF) != 0:
        _ring_bell(hdr)
        return True
    return False


@njit(cache=True, nogil=True, _nrt=False)
def _ring_bell(hdr):
    """The rare path of ``notify`` (kept out of line): clear SLEEP, bump BELL, FUTEX_WAKE."""
    store_relaxed(hdr, SLEEP_OFF, 0)
    store_release(hdr, BELL_OFF, (load_relaxed(hdr, BELL_OFF) + np.uint64(1))
                  & np.uint64(0xFFFFFFFF))
    store_relaxed(hdr, RUNG_OFF, load_relaxed(hdr, RUNG_OFF) + np.uint64(1))
    sys_futex_wake(hdr, BELL_OFF)


@njit(cache=True, nogil=True, _nrt=False)
def arm(hdr, bells, i):
    """A consumer about to sleep: note the ring's BELL in ``bells[i]`` (its futex_waitv row, made
    by ``bell_rows``) and set SLEEP. Then: a full fence, a last look at the ring, the sleep."""
    bells[i, 0] = np.int64(load_acquire(hdr, BELL_OFF))
    store_relaxed(hdr, SLEEP_OFF, 1)


@njit(cache=True, nogil=True, _nrt=False)
def behind(hdr, cur):
    """Records published and not yet read by cursor ``cur``."""
    return np.int64(load_acquire(hdr, HEAD_OFF) - cur[CUR_POS])


@njit(cache=True, nogil=True)
def idle_on(params, state, hdr, cur, bells):
    """``wait.idle`` for a consumer of one ring: where the back-off would sleep, it sleeps on the
    ring's doorbell instead (``bells``: its ``bell_rows`` row; none: plain ``wait.idle``)."""
    if bells.shape[0] == 0 or not wait.will_sleep(params, state):
        wait.idle(params, state)
        return
    arm(hdr, bells, 0)
    fence_seq_cst()
    if behind(hdr, cur) > 0:
        return                           # published meanwhile: poll again, no sleep
    wait.sleep_bells(params, state, bells, 1)


def bell_rows(hdrs) -> np.ndarray:
    """The futex_waitv vector of a consumer of ``hdrs`` (ring headers, mapped: the addresses
    must stay valid while the consumer lives): int64[len, BELL_COLS]."""
    out = np.zeros((len(hdrs), BELL_COLS), np.int64)
    for i, h in enumerate(hdrs):
        out[i, 1] = h.ctypes.data + BELL_OFF
        out[i, 2] = FUTEX_32
    return out


@njit(cache=True, nogil=True, _nrt=False)
def poll(hdr, data, cur, out):
    """Copy the consumer's next record into ``out`` (uint8[record_size]) and advance: returns 1,
    or 0 when none is published yet. When lapped, skips to the oldest intact record, adds the
    skipped count to ``cur[CUR_LOST]`` and returns 0 (the next call reads on)."""
    pos = cur[CUR_POS]
    rs = np.uint64(data.shape[1])
    off = (pos & np.uint64(data.shape[0] - 1)) * rs
    want = pos * np.uint64(2) + np.uint64(2)
    v1 = load_acquire(data, off)
    if v1 == want:
        w = np.uint64(8)
        while w < rs:
            store_relaxed(out, w, load_relaxed(data, off + w))
            w += np.uint64(8)
        fence_acquire()
        v2 = load_relaxed(data, off)
        if v2 == want:
            store_relaxed(out, 0, v1)
            cur[CUR_POS] = pos + np.uint64(1)
            return 1
    elif v1 < want:
        return 0
    # lapped: the slot already holds a later record
    head = load_acquire(hdr, HEAD_OFF)
    cap = np.uint64(data.shape[0])
    oldest = head - cap + np.uint64(1) if head >= cap else np.uint64(0)
    if oldest > pos:
        cur[CUR_LOST] += oldest - pos
        cur[CUR_LAPS] += np.uint64(1)
        cur[CUR_POS] = oldest
    return 0


@njit(cache=True, nogil=True)
def drain(hdr, data, cur, out2d, max_n):
    """Up to ``max_n`` records into the rows of ``out2d``; returns how many."""
    n = 0
    while n < max_n:
        if poll(hdr, data, cur, out2d[n]) == 0:
            # one retry covers the poll that only resynchronised after a lap
            if poll(hdr, data, cur, out2d[n]) == 0:
                break
        n += 1
    return n


@njit(cache=True, nogil=True, _nrt=False)
def head(hdr):
    """Sequence of the next record the producer will publish (= records published so far)."""
    return load_acquire(hdr, HEAD_OFF)


# --------------------------------------------------------------------------------------- Python

def _geometry_ok(record_size: int, capacity: int) -> None:
    if record_size % 64 or record_size <= 0:
        raise ValueError(f"record_size must be a positive multiple of 64, got {record_size}")
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"capacity must be a power of two >= 2, got {capacity}")


def _aligned_zeros(nbytes: int, align: int = 4096) -> np.ndarray:
    raw = np.zeros(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def local_ring(record_size: int, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """A ring in this process's memory with the shared layout: ``(hdr, data)``."""
    _geometry_ok(record_size, capacity)
    mem = _aligned_zeros(DATA_OFFSET + record_size * capacity)
    hdr = mem[:DATA_OFFSET].view(np.uint64)
    hdr[shm.W_MAGIC] = shm.MAGIC
    hdr[shm.W_LAYOUT] = shm.LAYOUT_VERSION
    hdr[shm.W_KIND] = shm.KIND_RING
    hdr[shm.W_RECORD_SIZE] = record_size
    hdr[shm.W_CAPACITY] = capacity
    hdr[shm.W_DATA_OFFSET] = DATA_OFFSET
    data = mem[DATA_OFFSET:].reshape(capacity, record_size)
    return hdr, data


def local_cursor(hdr: np.ndarray, start: str = START_OLDEST) -> np.ndarray:
    """A private cursor (not registered in the consumer table) for a local or mapped ring."""
    cur = np.zeros(CUR_WORDS, np.uint64)
    cur[CUR_STATE] = 1
    cur[CUR_POS] = _start_pos(hdr, start)
    return cur


def _start_pos(hdr: np.ndarray, start: str) -> int:
    h = int(head(hdr))
    cap = int(hdr[shm.W_CAPACITY])
    if start == START_LATEST:
        return h
    if start == START_OLDEST:
        return max(0, h - cap + 1)
    raise ValueError(f"start must be {START_OLDEST!r} or {START_LATEST!r}, got {start!r}")


class RingWriter:
    """The single producer of a ring region."""

    def __init__(self, region: shm.Region):
        self.region = region
        self.hdr = region.header_view(DATA_OFFSET)
        self.data = region.data_view()

    @classmethod
    def create(cls, name: str, record_size: int, capacity: int, shm_dir=None,
               private: bool = False) -> "RingWriter":
        _geometry_ok(record_size, capacity)
        return cls(shm.create(name, shm.KIND_RING, record_size, capacity, DATA_OFFSET, shm_dir, private))

    @property
    def head(self) -> int:
        return int(head(self.hdr))

    def publish(self, rec: np.ndarray) -> int:
        """Publish one record from Python (tests, rare control records): ~1 us per call."""
        s = int(publish(self.hdr, self.data, np.ascontiguousarray(rec).view(np.uint8).reshape(-1)))
        notify(self.hdr)
        return s

    def close(self) -> None:
        self.hdr = self.data = None
        self.region.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RingReader:
    """One consumer of a ring region, registered in its consumer table."""

    def __init__(self, region: shm.Region, index: int):
        self.region = region
        self.index = index
        self.hdr = region.header_view(DATA_OFFSET)
        self.data = region.data_view()
        base = CONSUMER_TABLE // 8 + index * CUR_WORDS
        self.cur = self.hdr[base:base + CUR_WORDS]

    @classmethod
    def attach(cls, name: str, consumer: str = "reader", start: str = START_OLDEST,
               shm_dir=None) -> "RingReader":
        region = shm.attach(name, shm.KIND_RING, shm_dir)
        hdr = region.header_view(DATA_OFFSET)
        pos = _start_pos(hdr, start)
        table_bytes = MAX_CONSUMERS * CUR_WORDS * 8
        fcntl.lockf(region.fd, fcntl.LOCK_EX, table_bytes, CONSUMER_TABLE)
        try:
            idx = None
            for i in range(MAX_CONSUMERS):
                c = hdr[CONSUMER_TABLE // 8 + i * CUR_WORDS:][:CUR_WORDS]
                if c[CUR_STATE] == 0 or not shm.process_alive(int(c[CUR_PID]), int(c[CUR_LAUNCH])):
                    idx = i
                    break
            if idx is None:
                region.close()
                raise shm.ShmError(f"ring {name}: all {MAX_CONSUMERS} consumer slots are taken "
                                   f"by live consumers")
            c = hdr[CONSUMER_TABLE // 8 + idx * CUR_WORDS:][:CUR_WORDS]
            c[:] = 0
            c[CUR_PID] = os.getpid()
            c[CUR_LAUNCH] = shm.process_start_ns(os.getpid())
            c[CUR_POS] = pos
            c[CUR_NAME:CUR_NAME + 2] = np.frombuffer(consumer.encode()[:16].ljust(16, b"\0"), np.uint64)
            c[CUR_STATE] = 1
        finally:
            fcntl.lockf(region.fd, fcntl.LOCK_UN, table_bytes, CONSUMER_TABLE)
        return cls(region, idx)

    @property
    def lost(self) -> int:
        return int(self.cur[CUR_LOST])

    @property
    def position(self) -> int:
        return int(self.cur[CUR_POS])

    def writer_restarted(self) -> bool:
        return self.region.writer_restarted()

    def resync(self, start: str = START_LATEST) -> None:
        """After a writer restart: accept the new writer and move to ``start``."""
        self.region.gen_at_open = int(self.region.words[shm.W_WRITER_GEN])
        self.cur[CUR_POS] = _start_pos(self.hdr, start)

    def poll(self, out: np.ndarray) -> int:
        return int(poll(self.hdr, self.data, self.cur, out))

    def close(self) -> None:
        if self.region.mm is None:
            return
        self.cur[CUR_STATE] = 0
        self.cur = self.hdr = self.data = None
        self.region.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def consumers(hdr: np.ndarray) -> list[dict]:
    """The consumer table of a mapped ring, for ``shm ls`` and ``status``."""
    out = []
    h = int(head(hdr))
    for i in range(MAX_CONSUMERS):
        c = hdr[CONSUMER_TABLE // 8 + i * CUR_WORDS:][:CUR_WORDS]
        if c[CUR_STATE] == 0:
            continue
        name = c[CUR_NAME:CUR_NAME + 2].tobytes().rstrip(b"\0").decode(errors="replace")
        out.append({
            "index": i, "name": name, "pid": int(c[CUR_PID]),
            "alive": shm.process_alive(int(c[CUR_PID]), int(c[CUR_LAUNCH])),
            "position": int(c[CUR_POS]), "lag": max(0, h - int(c[CUR_POS])),
            "lost": int(c[CUR_LOST]), "laps": int(c[CUR_LAPS]),
        })
    return out

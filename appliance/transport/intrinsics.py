"""Memory ordering and CPU intrinsics for numba code: the only module that emits them.

Every function is tiny and compiles to one or two instructions. Pointer arguments are an array
plus a BYTE offset into its data (the array must be C-contiguous; the offset is not bounds
checked: callers compute it from the region geometry). On x86-64 (TSO):

===================  ===============================  =========================================
function             ordering (C++11 terms)           x86-64 code
===================  ===============================  =========================================
load_acquire         load, memory_order_acquire       ``mov`` + compiler barrier
load_relaxed         load, memory_order_relaxed       ``mov`` (never elided, never torn)
store_release        store, memory_order_release      ``mov`` + compiler barrier
store_relaxed        store, memory_order_relaxed      ``mov``
fence_acquire        atomic_thread_fence(acquire)     nothing (compiler barrier only)
fence_release        atomic_thread_fence(release)     nothing (compiler barrier only)
fence_seq_cst        atomic_thread_fence(seq_cst)     ``mfence``
compiler_barrier     signal fence                     nothing
cpu_pause            spin-wait hint                   ``pause``
rdtsc                time-stamp counter               ``rdtsc`` (not ordered with loads)
rdtscp               TSC after prior instructions     ``rdtscp`` (waits for earlier instructions)
monotonic_ns         CLOCK_MONOTONIC                  ``call clock_gettime`` (vDSO)
bit_length           bits needed for an unsigned u64  ``lzcnt`` / ``bsr``
move_bytes           overlapping copy inside an array ``memmove`` (vector moves)
prefetch_write       cache-line hint for a store      ``prefetchw``
sys_recv             socket read, never blocks        ``call recv`` (MSG_DONTWAIT)
sys_peek             bytes waiting on a socket?       ``call recv`` (MSG_DONTWAIT | MSG_PEEK)
sys_send             socket write, never blocks       ``call send`` (MSG_DONTWAIT | MSG_NOSIGNAL)
sys_errno            the thread's errno               ``call __errno_location``
sys_setsockopt_int   an int socket option             ``call setsockopt`` (value on the stack)
sys_futex_wake       wake a shared futex's waiters    ``call syscall`` (futex, FUTEX_WAKE)
sys_futex_waitv      sleep on several futexes         ``call syscall`` (futex_waitv, Linux 5.16+)
===================  ===============================  =========================================

Why atomics at all on x86: without them LLVM may hoist a plain load out of a spin loop, merge or
reorder stores, or tear a 64-bit copy into vector moves. The atomic forms forbid exactly that and
cost nothing at run time.
"""
from __future__ import annotations

import llvmlite.binding as _llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# inline asm (pause, rdtsc) needs the native asm parser, which numba does not initialise
_llvm.initialize_native_asmparser()

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


def _byte_ptr(context, builder, arrty, arr, offset):
    """i64* at ``arr.data + offset`` bytes."""
    ary = context.make_array(arrty)(context, builder, arr)
    base = builder.ptrtoint(ary.data, _I64)
    addr = builder.add(base, builder.sext(offset, _I64) if offset.type.width < 64 else offset)
    return builder.inttoptr(addr, _I64.as_pointer())


def _check(arr, off):
    return isinstance(arr, types.Array) and isinstance(off, types.Integer)


def _load(ordering: str, doc: str):
    @intrinsic
    def _ld(typingctx, arr, off):
        if not _check(arr, off):
            return None

        def codegen(context, builder, sig, args):
            ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
            return builder.load_atomic(ptr, ordering, 8)
        return types.uint64(arr, off), codegen
    _ld.__doc__ = doc
    return _ld


def _store(ordering: str, doc: str):
    @intrinsic
    def _st(typingctx, arr, off, val):
        if not (_check(arr, off) and isinstance(val, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
            v = context.cast(builder, args[2], sig.args[2], types.uint64)
            builder.store_atomic(v, ptr, ordering, 8)
            return context.get_dummy_value()
        return types.void(arr, off, val), codegen
    _st.__doc__ = doc
    return _st


load_acquire = _load("acquire", "Acquire load of the u64 at byte ``off``: later loads/stores are "
                                "not moved before it.")
load_relaxed = _load("monotonic", "Relaxed (monotonic) load of the u64 at byte ``off``: a plain "
                                  "mov that LLVM cannot elide.")
store_release = _store("release", "Release store of u64 ``val`` at byte ``off``: earlier "
                                  "loads/stores are not moved after it.")
store_relaxed = _store("monotonic", "Relaxed (monotonic) store of u64 ``val`` at byte ``off``.")


@intrinsic
def fetch_add(typingctx, arr, off, val):
    """Atomic fetch-and-add (seq_cst) on the u64 at byte ``off``; ``lock xadd`` on x86."""
    if not (_check(arr, off) and isinstance(val, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
        v = context.cast(builder, args[2], sig.args[2], types.uint64)
        return builder.atomic_rmw("add", ptr, v, "seq_cst")
    return types.uint64(arr, off, val), codegen


def _fence(ordering, scope=""):
    @intrinsic
    def _f(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(ordering, scope or None)
            return context.get_dummy_value()
        return types.void(), codegen
    return _f


fence_acquire = _fence("acquire")
fence_acquire.__doc__ = "Acquire fence: earlier loads are ordered before later loads and stores."
fence_release = _fence("release")
fence_release.__doc__ = "Release fence: earlier loads and stores are ordered before later stores."
fence_seq_cst = _fence("seq_cst")
fence_seq_cst.__doc__ = "Full fence (mfence): also orders earlier stores before later loads."
compiler_barrier = _fence("seq_cst", "singlethread")
compiler_barrier.__doc__ = "Compiler-only barrier: no instruction, no reordering across it."


@intrinsic
def cpu_pause(typingctx):
    """The x86 ``pause`` spin-wait hint (saves power, frees the sibling hyper-thread)."""
    def codegen(context, builder, sig, args):
        asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "pause", "~{memory}", side_effect=True)
        builder.call(asm, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def rdtsc(typingctx):
    """Read the time-stamp counter (``rdtsc``). Not serialising: may execute before earlier loads."""
    def codegen(context, builder, sig, args):
        asm = ir.InlineAsm(ir.FunctionType(ir.LiteralStructType([_I32, _I32]), []),
                           "rdtsc", "={eax},={edx}", side_effect=True)
        r = builder.call(asm, [])
        lo = builder.zext(builder.extract_value(r, 0), _I64)
        hi = builder.zext(builder.extract_value(r, 1), _I64)
        return builder.or_(builder.shl(hi, ir.Constant(_I64, 32)), lo)
    return types.uint64(), codegen


@intrinsic
def rdtscp(typingctx):
    """Read the TSC after all earlier instructions have executed (``rdtscp``); ignores TSC_AUX."""
    def codegen(context, builder, sig, args):
        asm = ir.InlineAsm(ir.FunctionType(ir.LiteralStructType([_I32, _I32, _I32]), []),
                           "rdtscp", "={eax},={edx},={ecx}", side_effect=True)
        r = builder.call(asm, [])
        lo = builder.zext(builder.extract_value(r, 0), _I64)
        hi = builder.zext(builder.extract_value(r, 1), _I64)
        return builder.or_(builder.shl(hi, ir.Constant(_I64, 32)), lo)
    return types.uint64(), codegen


@intrinsic
def monotonic_ns(typingctx):
    """CLOCK_MONOTONIC in ns via ``clock_gettime`` (vDSO, ~20 ns): the non-invariant-TSC fallback."""
    def codegen(context, builder, sig, args):
        ts_t = ir.LiteralStructType([_I64, _I64])
        fnty = ir.FunctionType(_I32, [_I32, ts_t.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_t)
        builder.call(fn, [ir.Constant(_I32, 1), ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(_I64, 1_000_000_000)), nsec)
    return types.int64(), codegen


@intrinsic
def bit_length(typingctx, x):
    """Bits needed to write ``x`` as an unsigned 64-bit integer (0 for 0): ``64 - ctlz(x)``,
    one ``lzcnt`` (or ``bsr``) instead of a shift loop."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.uint64)
        lz = builder.ctlz(v, ir.Constant(ir.IntType(1), 0))
        return builder.sub(ir.Constant(_I64, 64), lz)
    return types.int64(x), codegen


@intrinsic
def move_bytes(typingctx, arr, dst_off, src_off, nbytes):
    """Copy ``nbytes`` bytes inside ``arr`` from byte ``src_off`` to byte ``dst_off``; the two
    ranges may overlap (``llvm.memmove``: vector moves, where an element loop in numba stays a
    scalar loop). No bounds check: the caller keeps both ranges inside the array."""
    if not (_check(arr, dst_off) and isinstance(src_off, types.Integer)
            and isinstance(nbytes, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        dst = builder.bitcast(_byte_ptr(context, builder, sig.args[0], args[0], args[1]), i8p)
        src = builder.bitcast(_byte_ptr(context, builder, sig.args[0], args[0], args[2]), i8p)
        n = context.cast(builder, args[3], sig.args[3], types.int64)
        cgutils.raw_memmove(builder, dst, src, n, ir.Constant(_I64, 1))
        return context.get_dummy_value()
    return types.void(arr, dst_off, src_off, nbytes), codegen


@intrinsic
def prefetch_write(typingctx, arr, off):
    """Hint: bring the cache line at byte ``off`` into L1 for writing (``prefetchw``: owned, so
    the store that follows does not miss; never faults, costs no wait)."""
    if not _check(arr, off):
        return None

    def codegen(context, builder, sig, args):
        ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        fn = builder.module.declare_intrinsic("llvm.prefetch", (), ir.FunctionType(
            ir.VoidType(), [ir.IntType(8).as_pointer(), _I32, _I32, _I32]))
        # llvm.prefetch(ptr, rw 1 = write, locality 3 = keep in all levels, 1 = data cache)
        builder.call(fn, [i8p, ir.Constant(_I32, 1), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.void(arr, off), codegen


# --- socket calls (libc) from compiled code --------------------------------------------------------
MSG_PEEK = 0x2
MSG_DONTWAIT = 0x40
MSG_NOSIGNAL = 0x4000
EAGAIN = 11
EINTR = 4


def _libc_buf_call(name: str, flags: int, doc: str):
    """An intrinsic ``f(fd, arr, off, n)``: libc ``name(fd, arr.data + off, n, flags)`` (recv or
    send), returning its ssize_t as int64 (-1: see :func:`sys_errno`)."""
    def impl(typingctx, fd, arr, off, n):
        if not (isinstance(arr, types.Array) and isinstance(fd, types.Integer)
                and isinstance(off, types.Integer) and isinstance(n, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[1])(context, builder, args[1])
            base = builder.ptrtoint(ary.data, _I64)
            off_ = context.cast(builder, args[2], sig.args[2], types.int64)
            ptr = builder.inttoptr(builder.add(base, off_), ir.IntType(8).as_pointer())
            fnty = ir.FunctionType(_I64, [_I32, ir.IntType(8).as_pointer(), _I64, _I32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            fd_ = builder.trunc(context.cast(builder, args[0], sig.args[0], types.int64), _I32)
            n_ = context.cast(builder, args[3], sig.args[3], types.int64)
            return builder.call(fn, [fd_, ptr, n_, ir.Constant(_I32, flags)])
        return types.int64(fd, arr, off, n), codegen
    impl.__doc__ = doc
    return intrinsic(impl)


sys_recv = _libc_buf_call("recv", MSG_DONTWAIT, """``recv(fd, arr.data + off, n, MSG_DONTWAIT)``:
bytes read, 0 at end of stream, -1 on error (see :func:`sys_errno`). Never blocks.""")
sys_peek = _libc_buf_call("recv", MSG_DONTWAIT | MSG_PEEK, """``recv(fd, arr.data + off, n,
MSG_DONTWAIT | MSG_PEEK)``: > 0 when bytes are waiting (they stay in the socket), 0 at end of
stream, -1 with EAGAIN when none.""")
sys_send = _libc_buf_call("send", MSG_DONTWAIT | MSG_NOSIGNAL, """``send(fd, arr.data + off, n,
MSG_DONTWAIT | MSG_NOSIGNAL)``: bytes taken, or -1 (see :func:`sys_errno`). Never blocks, never
raises SIGPIPE.""")


@intrinsic
def sys_setsockopt_int(typingctx, fd, level, optname, value):
    """``setsockopt(fd, level, optname, &value, 4)`` with ``value`` as a C int: 0 or -1 (see
    :func:`sys_errno`)."""
    if not all(isinstance(a, types.Integer) for a in (fd, level, optname, value)):
        return None

    def codegen(context, builder, sig, args):
        i32 = [builder.trunc(context.cast(builder, a, t, types.int64), _I32)
               for a, t in zip(args, sig.args)]
        slot = cgutils.alloca_once(builder, _I32)
        builder.store(i32[3], slot)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(_I32, [_I32, _I32, _I32, i8p, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "setsockopt")
        r = builder.call(fn, [i32[0], i32[1], i32[2], builder.bitcast(slot, i8p),
                              ir.Constant(_I32, 4)])
        return builder.sext(r, _I64)
    return types.int64(fd, level, optname, value), codegen


@intrinsic
def sys_errno(typingctx):
    """The calling thread's ``errno`` (``*__errno_location()``)."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_I32.as_pointer(), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "__errno_location")
        return builder.sext(builder.load(builder.call(fn, [])), _I64)
    return types.int64(), codegen


# --- futexes (libc syscall()) from compiled code: the rings' doorbells (ring.py) -------------------
SYS_FUTEX = 202
SYS_FUTEX_WAITV = 449
FUTEX_WAKE = 1
FUTEX_32 = 2               # futex_waitv flags: a 32-bit futex word (shared: no FUTEX_PRIVATE_FLAG)
CLOCK_MONOTONIC = 1
ENOSYS = 38
ETIMEDOUT = 110


def _syscall_fn(builder):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64], var_arg=True),
                                          "syscall")


@intrinsic
def sys_futex_wake(typingctx, arr, off):
    """``futex(arr.data + off, FUTEX_WAKE, INT_MAX)`` on the 32-bit word at byte ``off`` (shared,
    not FUTEX_PRIVATE: the word may live in memory mapped by other processes): the number of
    waiters woken, or -1 (see :func:`sys_errno`)."""
    if not _check(arr, off):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.ptrtoint(_byte_ptr(context, builder, sig.args[0], args[0], args[1]), _I64)
        z = ir.Constant(_I64, 0)
        return builder.call(_syscall_fn(builder), [ir.Constant(_I64, SYS_FUTEX), ptr,
                                                   ir.Constant(_I64, FUTEX_WAKE),
                                                   ir.Constant(_I64, 0x7FFFFFFF), z, z, z])
    return types.int64(arr, off), codegen


@intrinsic
def sys_futex_waitv(typingctx, vec, n, deadline_ns):
    """``futex_waitv(vec.data, n, 0, &deadline, CLOCK_MONOTONIC)``: sleep until one of the ``n``
    futexes of ``vec`` (int64[n, 3], one ``struct futex_waitv`` per row: the value expected, the
    word's address, FUTEX_32) is woken or no longer holds its value, or CLOCK_MONOTONIC reaches
    ``deadline_ns``. Returns the index of the futex woken, or -1 (see :func:`sys_errno`: EAGAIN
    a value had changed, ETIMEDOUT, EINTR, ENOSYS before Linux 5.16)."""
    if not (isinstance(vec, types.Array) and isinstance(n, types.Integer)
            and isinstance(deadline_ns, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        base = builder.ptrtoint(ary.data, _I64)
        n_ = context.cast(builder, args[1], sig.args[1], types.int64)
        dl = context.cast(builder, args[2], sig.args[2], types.int64)
        ts_t = ir.LiteralStructType([_I64, _I64])
        ts = cgutils.alloca_once(builder, ts_t)
        billion = ir.Constant(_I64, 1_000_000_000)
        builder.store(builder.sdiv(dl, billion), cgutils.gep_inbounds(builder, ts, 0, 0))
        builder.store(builder.srem(dl, billion), cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.call(_syscall_fn(builder), [
            ir.Constant(_I64, SYS_FUTEX_WAITV), base, n_, ir.Constant(_I64, 0),
            builder.ptrtoint(ts, _I64), ir.Constant(_I64, CLOCK_MONOTONIC)])
    return types.int64(vec, n, deadline_ns), codegen

"""The seqlock order (version -> payload -> version) must survive compilation.

The functions are recompiled uncached with the same flags as ring.py (cached code cannot be
inspected) and the x86-64 assembly of the native function is read instruction by instruction.
"""
from __future__ import annotations

import platform
import re

import numba
import numpy as np
import pytest

from appliance.transport import ring

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 assembly check")

MEM = re.compile(r"(-?\d*)\(([^)]*)\)")


def _native_body(dispatcher, name: str) -> list[str]:
    asm = next(iter(dispatcher.inspect_asm().values()))
    lines = asm.splitlines()
    start = next(i for i, l in enumerate(lines)
                 if re.match(rf"^_ZN9appliance9transport4ring\d*{name}B", l) or
                 re.match(rf"^_ZN\d+appliance9transport4ring{len(name)}{name}B", l))
    body = []
    for l in lines[start + 1:]:
        if l.startswith(".Lfunc_end"):
            break
        body.append(l.strip())
    return body


def _addr(operand: str) -> tuple[int, frozenset] | None:
    m = MEM.search(operand)
    if not m:
        return None
    disp = int(m.group(1) or 0)
    regs = frozenset(r.strip() for r in m.group(2).split(",") if r.strip().startswith("%"))
    return disp, regs


def _operands(line: str) -> list[str]:
    """AT&T operands of one instruction, split on commas outside parentheses."""
    parts = line.split(None, 1)
    if len(parts) < 2:
        return []
    return [o.strip() for o in re.split(r",(?![^(]*\))", parts[1])]


def _moves(body):
    for i, l in enumerate(body):
        if l.startswith("mov"):
            ops = _operands(l)
            if len(ops) == 2:
                yield i, ops[0], ops[1]


def _stores(body):
    return [(i, _addr(dst)) for i, src, dst in _moves(body) if _addr(dst) is not None]


def _loads(body):
    return [(i, _addr(src)) for i, src, dst in _moves(body)
            if _addr(src) is not None and _addr(dst) is None]


def _compiled(fn, *args):
    d = numba.njit(nogil=True, _nrt=False)(fn.py_func)
    d(*args)
    return d


def test_publish_stores_version_then_payload_then_version_then_head():
    hdr, data = ring.local_ring(64, 8)
    body = _native_body(_compiled(ring.publish, hdr, data, np.zeros(64, np.uint8)), "publish")
    stores = _stores(body)
    first_i, ver_addr = stores[0]
    assert ver_addr[0] == 0, f"first store is not the slot's version word: {body[first_i]}"
    ver_stores = [i for i, a in stores if a == ver_addr]
    assert len(ver_stores) == 2, f"expected odd and even version stores, got {ver_stores}"
    payload = [i for i, a in stores if ver_stores[0] < i < ver_stores[1] and a != ver_addr]
    assert payload, "no payload store between the two version stores"
    assert not [i for i, a in stores if i < ver_stores[0]], "a store precedes the odd version"
    head = [i for i, a in stores if a[0] == ring.HEAD_OFF]
    assert head and head[0] > ver_stores[1], "head is published before the record's version"


def test_poll_loads_version_then_payload_then_version_again():
    hdr, data = ring.local_ring(64, 8)
    cur = ring.local_cursor(hdr)
    body = _native_body(_compiled(ring.poll, hdr, data, cur, np.zeros(64, np.uint8)), "poll")
    loads = _loads(body)
    # the version load is the first load whose result is compared against 2*pos+2
    slot_loads = [(i, a) for i, a in loads if a[0] == 0 and len(a[1]) == 2]
    v1_i, ver_addr = slot_loads[0]
    again = [i for i, a in loads if a == ver_addr and i > v1_i]
    assert again, "the version is not re-read after the payload"
    v2_i = again[0]
    payload = [i for i, a in loads if v1_i < i < v2_i and a != ver_addr]
    assert payload, "no payload load between the two version loads"
    assert not [i for i, a in loads if i > v2_i and a[0] in range(8, 64) and len(a[1]) == 2
                and a != ver_addr and a[1] == ver_addr[1]], "payload read after the second version load"


def test_hot_ring_functions_have_no_refcounting():
    hdr, data = ring.local_ring(64, 8)
    cur = ring.local_cursor(hdr)
    rec = np.zeros(64, np.uint8)
    for fn, args, name in ((ring.publish, (hdr, data, rec), "publish"),
                           (ring.poll, (hdr, data, cur, rec), "poll")):
        body = "\n".join(_native_body(_compiled(fn, *args), name))
        assert "NRT_incref" not in body and "NRT_decref" not in body, name

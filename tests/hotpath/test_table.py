from __future__ import annotations

import numpy as np

from appliance.hotpath import table


def test_read_returns_latest_value_and_its_version(shm_dir):
    t = table.SlotTable.create("quotes", 32, 8)
    out = np.zeros(32, np.uint8)
    assert table.read(t.arr, 3, out) == 0                       # never written
    v1 = table.write(t.arr, 3, np.full(32, 7, np.uint8))
    v2 = table.write(t.arr, 3, np.full(32, 9, np.uint8))
    assert (v1, v2) == (2, 4)
    assert table.read(t.arr, 3, out) == 4 and (out == 9).all()
    other = table.SlotTable.attach("quotes")
    assert table.version(other.arr, 3) == 4
    assert table.read(other.arr, 2, out) == 0
    other.close()
    t.close()


def test_slots_never_share_a_cache_line():
    assert table.slot_size(8) == 64 and table.slot_size(56) == 64 and table.slot_size(64) == 128


def test_writer_that_died_mid_write_does_not_hang_readers():
    arr = table.SlotTable.local(8, 2)
    arr[0, :8].view(np.uint64)[0] = 3                            # odd: a write never finished
    assert table.read(arr, 0, np.zeros(8, np.uint8)) == 0

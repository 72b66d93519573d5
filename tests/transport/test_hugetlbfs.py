"""The hugetlbfs path for real: reserve huge pages, mount hugetlbfs, run a ring in it across
processes, then unmount and give the pages back. Skips (with the reason) where that is impossible."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import tempfile

import numpy as np
import pytest

from appliance.transport import ring, shm
from tests.transport import ringprocs as rp

NR = "/proc/sys/vm/nr_hugepages"
PAGES = 8


@pytest.fixture
def hugetlbfs_dir():
    if os.geteuid() != 0:
        pytest.skip("needs root to reserve huge pages and mount hugetlbfs")
    try:
        with open(NR) as f:
            before = int(f.read())
    except OSError as e:
        pytest.skip(f"cannot read {NR}: {e}")
    mnt = tempfile.mkdtemp(prefix="appliance-huge-")
    mounted = False
    try:
        try:
            with open(NR, "w") as f:
                f.write(str(before + PAGES))
        except OSError as e:
            pytest.skip(f"cannot reserve huge pages via {NR}: {e}")
        if shm.free_hugepages() < PAGES:
            pytest.skip(f"kernel granted only {shm.free_hugepages()} free huge pages")
        r = subprocess.run(["mount", "-t", "hugetlbfs", "-o", "mode=0770,pagesize=2M", "none", mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount hugetlbfs: {r.stderr.strip()}")
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)
        os.rmdir(mnt)
        with open(NR, "w") as f:
            f.write(str(before))


def test_ring_in_hugetlbfs_is_huge_page_backed_and_works_across_processes(hugetlbfs_dir, monkeypatch):
    d = os.path.join(hugetlbfs_dir, "appliance")
    monkeypatch.setenv("APPLIANCE_SHM_DIR", d)
    assert shm.is_hugetlbfs(d) or shm.is_hugetlbfs(hugetlbfs_dir)
    ctx = mp.get_context("spawn")
    published = ctx.Event()
    p = ctx.Process(target=rp.writer_then_die, args=("huge", d, 4096, 1000, published, "kill"))
    p.start()
    assert published.wait(120)
    p.join(30)
    r = ring.RingReader.attach("huge", "t")
    assert r.region.backing == "hugetlbfs"
    assert os.path.getsize(os.path.join(d, "huge")) % (2 << 20) == 0
    out = np.zeros(64, np.uint8)
    n = 0
    while r.poll(out):
        n += 1
    assert n == 1000
    # auto-selection picks the mount while it has free pages
    monkeypatch.delenv("APPLIANCE_SHM_DIR")
    assert str(shm.resolve_dir(hugetlbfs_mount=hugetlbfs_dir)).startswith(hugetlbfs_dir)
    r.close()
    os.unlink(os.path.join(d, "huge"))

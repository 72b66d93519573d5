"""Shared fixtures: a private shared-memory directory per test, so tests never touch a running
appliance's regions and leave nothing behind."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def shm_dir(monkeypatch) -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = Path(tempfile.mkdtemp(prefix="appliance-test-", dir=base))
    monkeypatch.setenv("APPLIANCE_SHM_DIR", str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)

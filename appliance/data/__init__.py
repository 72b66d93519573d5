"""Data shipped with the package, found the same way in an editable and a regular install.

- ``venues/``: recorded live market-data sessions of the five venues (cryptofeed's sample data,
  XFree86 1.1 licence in ``venues/LICENSE.cryptofeed``; formats in ``venues/README.md``): the
  venue simulator serves them, backtests and benches replay them.
- ``fix/``: the FIX 4.2 / 4.4 data dictionaries of the QuickFIX engine (QuickFIX Software
  License 1.0 in ``fix/LICENSE.quickfix``).
"""
from __future__ import annotations

import os
from pathlib import Path

DIR = Path(__file__).resolve().parent
VENUE_DATA_ENV = "APPLIANCE_VENUE_DATA"     # another directory of recordings in the same formats


def venues_dir() -> Path:
    """The directory of venue recordings: ``$APPLIANCE_VENUE_DATA`` if set, else the packaged one."""
    env = os.environ.get(VENUE_DATA_ENV)
    return Path(env) if env else DIR / "venues"


def fix_dir() -> Path:
    """The directory holding FIX42.xml / FIX44.xml."""
    return DIR / "fix"

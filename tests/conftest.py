"""Shared test fixtures; tests/ is on sys.path so tests import `builders` and `oracle`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

"""A generated store shared by the service tests of one process (built once, read only)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from agency import load

from engine.store import Store
from loaders.ingest import ingest_files
from loaders.synthetic import generate

RESIDENTS, MONTHS, SEED = 1500, 2, 5


@functools.cache
def synthetic_store() -> Store:
    """1 500 residents registered 2024-01-01 and two months of changes, registry loaded."""
    root = Path(tempfile.mkdtemp(prefix="juki-synthetic-"))
    atexit.register(shutil.rmtree, root, True)
    summary = generate(root / "files", residents=RESIDENTS, months=MONTHS, seed=SEED)
    store = Store(root / "store")
    report = ingest_files(store, sorted(summary.files))
    assert report.total("rejected") == 0
    load(store, root)
    return store

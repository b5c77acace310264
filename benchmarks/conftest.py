"""Session fixtures for the benchmark suite: one seeded synthetic population, generated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from loaders.demo import month_of
from loaders.synthetic import generate

RESIDENTS = 50_000
MONTHS = 6


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Initial `A4` files and change files of a 50 k-resident population over 6 months."""
    out = tmp_path_factory.mktemp("population")
    files = sorted(generate(out, residents=RESIDENTS, months=MONTHS, seed=7).files)
    return {
        "initial": [f for f in files if month_of(f).startswith("0000")],
        "changes": [f for f in files if not month_of(f).startswith("0000")],
    }


@pytest.fixture(scope="session")
def loaded_store(population: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compacted store holding the initial population, to copy per round."""
    from engine.maintenance import compact
    from engine.store import Store
    from loaders.ingest import ingest_files

    path = tmp_path_factory.mktemp("loaded") / "store"
    store = Store(path)
    ingest_files(store, population["initial"])
    with store.writer("bench"):
        compact(store)
    return path

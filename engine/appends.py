"""Blind appends to the audit tables (`provisions`, `requests`), safe beside other writers.

Appends to an existing Delta table never conflict (DESIGN Safety), but two writers creating the
same table at once do ("Metadata changed since last commit"). So a table is first created empty
on its own (a creation that loses the race finds the winner's table and carries on), then
appended to; a commit that still fails on a concurrent metadata change is retried.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

ATTEMPTS = 5


def _exists(root: Path) -> bool:
    return (root / "_delta_log" / "00000000000000000000.json").is_file()


def ensure_table(root: Path, schema: pa.Schema, partition_by: list[str] | None = None) -> None:
    """Create the table empty unless it exists; losing a creation race is fine."""
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError, DeltaError

    if _exists(root):
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_deltalake(str(root), schema.empty_table(), mode="append", partition_by=partition_by)
    except (CommitFailedError, DeltaError, OSError):
        if not _exists(root):
            raise


def append(root: Path, table: pa.Table, partition_by: list[str] | None = None) -> None:
    """Append rows to the table (created first if missing)."""
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    ensure_table(root, table.schema, partition_by)
    for attempt in range(ATTEMPTS):
        try:
            write_deltalake(str(root), table, mode="append", partition_by=partition_by)
            return
        except CommitFailedError:
            if attempt + 1 == ATTEMPTS:
                raise
            time.sleep(0.05 * (attempt + 1))

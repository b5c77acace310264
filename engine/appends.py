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


def append(
    root: Path,
    table: pa.Table,
    partition_by: list[str] | None = None,
    transactions: dict[str, int] | None = None,
) -> None:
    """Append rows to the table (created first if missing).

    `transactions` (app id → version) are committed with the rows as Delta app transactions,
    so a writer can later tell whether this append happened (`transaction_version`).
    """
    from deltalake import CommitProperties, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    ensure_table(root, table.schema, partition_by)
    properties = None
    if transactions:
        properties = CommitProperties(app_transactions=[
            Transaction(app_id=app, version=version) for app, version in transactions.items()
        ])  # fmt: skip
    for attempt in range(ATTEMPTS):
        try:
            write_deltalake(str(root), table, mode="append", partition_by=partition_by,
                            commit_properties=properties)  # fmt: skip
            return
        except CommitFailedError:
            if attempt + 1 == ATTEMPTS:
                raise
            time.sleep(0.05 * (attempt + 1))


def transaction_versions(root: Path, apps: list[str]) -> dict[str, int]:
    """The last committed version of each app transaction (0 when none, or no table yet)."""
    from deltalake import DeltaTable

    if not _exists(root):
        return dict.fromkeys(apps, 0)
    table = DeltaTable(str(root))
    return {app: int(table.transaction_version(app) or 0) for app in apps}

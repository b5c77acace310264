"""Consistency checks over the whole store (SPEC §8, 整合性確認): `juki check`.

`run_check(store, today=…)` runs the chosen rules over the history as known now (every batch up
to the journal's head) and returns one row per rule and person: `rule`, `severity`,
`resident_code` (the person's current one), `versions` (list of int32) and `message`. The rules
live in `engine.check_history` (per-person walks, record rules) and `engine.check_codes`
(uniqueness, the issued-code registry, check digits); this module picks them, folds their
findings per person and writes the report. Today's date is a parameter: the caller passes the
clock (Japan time), so that a check is reproducible.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from engine import check_codes, check_history
from engine.derived import CATCH_UP_TABLES
from engine.errors import UsageError
from engine.kernels.checkdigits import NULL
from engine.store import Store

Severity = Literal["error", "warning"]

# SPEC §8, in its order: errors, then warnings.
RULES: dict[str, Severity] = {
    "code-duplicate-current": "error",
    "code-shared": "error",
    "code-not-issued": "error",
    "check-digit": "error",
    "version-order": "error",
    "after-death": "error",
    "a2-without-d1": "error",
    "status-reason": "error",
    "birth-after-change": "error",
    "prefecture-mismatch": "error",
    "former-surname-pair": "error",
    "alias-japanese": "error",
    "former-surname-foreign": "error",
    "kana": "error",
    "move-in-late": "warning",
    "change-after-recorded": "warning",
    "over-120": "warning",
    "derived-behind": "warning",
}
REPORT_SCHEMA = pa.schema(
    [
        pa.field("rule", pa.string()),
        pa.field("severity", pa.string()),
        pa.field("resident_code", pa.string()),
        pa.field("versions", pa.list_(pa.int32())),
        pa.field("message", pa.string()),
    ]
)
# Rows of the history held in memory at once by a walk or code pass (~130 bytes a row at peak).
ROWS_PER_PASS = 15_000_000


@dataclass(frozen=True)
class CheckReport:
    """The violations found (REPORT_SCHEMA), the rules run in SPEC order, the batch checked."""

    violations: pl.DataFrame
    rules: tuple[str, ...]
    journal_batch: int
    seconds: float = field(default=0.0, compare=False)

    def counts(self) -> list[dict[str, object]]:
        """Per rule run, in SPEC order, zero counts included: rule, severity, count."""
        n = dict(self.violations.group_by("rule").len().iter_rows())
        return [{"rule": r, "severity": RULES[r], "count": int(n.get(r, 0))} for r in self.rules]

    def to_json(self) -> list[dict[str, object]]:
        return self.counts()

    @property
    def errors(self) -> int:
        return sum(int(c["count"]) for c in self.counts() if c["severity"] == "error")  # type: ignore[call-overload]

    @property
    def exit_code(self) -> int:
        """SPEC §7: 1 when any error-severity violation was found, else 0."""
        return 1 if self.errors else 0


def select_rules(names: Sequence[str] | None) -> tuple[str, ...]:
    """The rules to run, in SPEC order (None: all); an unknown id is a usage error."""
    if names is None:
        return tuple(RULES)
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(wanted - set(RULES))
    if unknown:
        raise UsageError(f"--rules: unknown rule '{unknown[0]}' (rules: {', '.join(RULES)})")
    if not wanted:
        raise UsageError("--rules: no rule given")
    return tuple(r for r in RULES if r in wanted)


def run_check(
    store: Store,
    *,
    today: dt.date,
    rules: Sequence[str] | None = None,
    rows_per_pass: int = ROWS_PER_PASS,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Run the rules over the whole store; `today` is the date in Japan (move-in-late, over-120)."""
    started = time.perf_counter()
    chosen = select_rules(rules)
    wanted = set(chosen)
    store.require()
    head = store.journal_head()
    snapshot = _snapshot(store)
    last_batch = max(head.batch, snapshot.last_batch)
    history = check_history.applied_history(str(store.table_path("journal")),
                                            version=snapshot.version)  # fmt: skip
    passes = max(1, math.ceil(snapshot.rows / rows_per_pass))
    found = pl.DataFrame(schema=check_history.FOUND_SCHEMA)
    result = None
    if wanted - {"derived-behind"}:  # every other rule reads the walk (at least the codes)
        if progress:
            progress(0, 2)
        result = check_history.walk(history, persons=head.next_person, today=today,
                                    rules=wanted, passes=passes)  # fmt: skip
        if progress:
            progress(1, 2)
        found = _findings(store, history, result, wanted, passes)
    violations = _fold(found, history, result)
    if "derived-behind" in wanted:
        violations = pl.concat([violations, _derived_behind(store, last_batch)])
    if progress:
        progress(2, 2)
    return CheckReport(violations=_in_spec_order(violations), rules=chosen,
                       journal_batch=last_batch, seconds=time.perf_counter() - started)  # fmt: skip


def _findings(store: Store, history: pl.LazyFrame, result: check_history.WalkResult,
              wanted: set[str], passes: int) -> pl.DataFrame:  # fmt: skip
    """Every rule's findings (rule, person, version, message), the walk's first."""
    found = [result.found]
    if wanted & set(check_history.RECORD_RULES):
        found.append(check_history.record_findings(history, result.skipped, wanted))
    if "code-duplicate-current" in wanted:
        found.append(check_codes.duplicate_current_findings(
            {"resident_code": result.current_rc, "my_number": result.current_mn},
            result.current_version,
        ))  # fmt: skip
    # National-size arrays no rule reads any more: free them before the registry is read.
    result.current_rc = result.current_mn = result.current_version = np.zeros(0, np.int64)
    if wanted & {"code-shared", "code-not-issued"}:
        registry = pl.concat([
            pl.scan_delta(str(store.table_path("codes"))).select("kind", "code", "person"),
            _pending_codes(history, after=store.reflected_batch("codes")),
        ])  # fmt: skip
        found.append(check_codes.registry_findings(history, result.held_codes, registry, wanted,
                                                   passes=passes))  # fmt: skip
    if "check-digit" in wanted:
        found.append(check_codes.check_digit_findings(history, result.bad_codes))
    return pl.concat(found)


@dataclass(frozen=True)
class _Snapshot:
    version: int  # the journal's Delta version read by every rule
    rows: int
    last_batch: int


def _snapshot(store: Store) -> _Snapshot:
    """The journal version to read, its rows and last batch (from the Delta log: no data read).

    The last batch comes from the files' statistics, not only from the last commit's metadata,
    so rows appended past ingest (a repair, a test's seeded violations) are checked too.
    """
    table = store.delta("journal")
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.is_empty():
        return _Snapshot(table.version(), 0, 0)
    last = actions["max.batch"].max() if "max.batch" in actions.columns else 0
    return _Snapshot(table.version(), int(actions["num_records"].sum()), int(last or 0))  # type: ignore[arg-type]


def _pending_codes(history: pl.LazyFrame, *, after: int) -> pl.LazyFrame:
    """Codes issued by batches after the registry's last reflected batch (kind, code, person)."""
    recent = history.filter(pl.col("batch") > after)
    parts = [
        recent.filter(pl.col(flag).fill_null(False)).select(
            kind=pl.lit(kind, pl.Int8), code=check_history.code_int(column, width),
            person="person",
        )
        for kind, column, flag, width in ((1, "resident_code", "issued_resident_code", 11),
                                          (2, "my_number", "issued_my_number", 12))
    ]  # fmt: skip
    return pl.concat(parts).filter(pl.col("code") >= 0)


def _fold(found: pl.DataFrame, history: pl.LazyFrame,
          result: check_history.WalkResult | None) -> pl.DataFrame:  # fmt: skip
    """One row per rule and person: sorted distinct versions, the first message (+ how many more)."""
    if found.is_empty():
        return pl.from_arrow(REPORT_SCHEMA.empty_table())  # type: ignore[return-value]
    folded = (
        found.sort("rule", "person", "version", nulls_last=True)
        .group_by("rule", "person", maintain_order=True)
        .agg(
            versions=pl.col("version").drop_nulls().unique().sort(),
            message=pl.col("message").first(),
            more=pl.len() - 1,
        )
        .with_columns(
            message=pl.when(pl.col("more") > 0)
            .then(pl.format("{} (and {} more)", pl.col("message"), pl.col("more")))
            .otherwise(pl.col("message"))
        )
    )
    codes = _resident_codes(folded["person"], history, result)
    return folded.join(codes, on="person", how="left").select(
        "rule",
        severity=pl.col("rule").replace_strict(RULES, return_dtype=pl.String),
        resident_code="resident_code",
        versions=pl.col("versions").cast(pl.List(pl.Int32)),
        message="message",
    )


def _resident_codes(persons: pl.Series, history: pl.LazyFrame,
                    result: check_history.WalkResult | None) -> pl.DataFrame:  # fmt: skip
    """Each person's current resident code as text (else the last one held: every version of the
    person cancelled), read from the history for persons whose code is not well formed."""
    keys = persons.unique().to_numpy()
    codes = np.full(len(keys), NULL, np.int64)
    if result is not None:
        inside = keys < len(result.resident_of)
        codes[inside] = result.resident_of[keys[inside]]
    frame = pl.DataFrame({"person": keys, "code": codes})
    good = frame.filter(pl.col("code") >= 0).select(
        "person", resident_code=pl.col("code").cast(pl.String).str.zfill(11)
    )
    rest = frame.filter(pl.col("code") < 0)["person"]
    if rest.is_empty():
        return good
    texts = (
        history.filter(pl.col("person").is_in(rest.implode()) & (pl.col("reason") != "X1"))
        .sort("batch", "apply_order")
        .group_by("person")
        .agg(resident_code=pl.col("resident_code").last())
        .collect()
    )
    return pl.concat([good, texts.cast({"resident_code": pl.String})])


def _derived_behind(store: Store, head: int) -> pl.DataFrame:
    """One row (no person) naming every derived table that reflects an older journal batch."""
    behind = {name: store.reflected_batch(name) for name in CATCH_UP_TABLES}
    behind = {name: batch for name, batch in behind.items() if batch < head}
    rows: list[dict[str, object]] = []
    if behind:
        tables = ", ".join(f"{name} at batch {batch}" for name, batch in behind.items())
        rows.append({"rule": "derived-behind", "severity": "warning", "resident_code": None,
                     "versions": [], "message": f"derived tables behind the journal (batch "
                     f"{head}): {tables}; the next writer catches them up"})  # fmt: skip
    return pl.from_arrow(pa.Table.from_pylist(rows, REPORT_SCHEMA))  # type: ignore[return-value]


def _in_spec_order(violations: pl.DataFrame) -> pl.DataFrame:
    order = {rule: i for i, rule in enumerate(RULES)}
    return violations.sort(
        pl.col("rule").replace_strict(order, return_dtype=pl.Int32), "resident_code",
        nulls_last=True,
    )


def write_report(report: CheckReport, path: str | Path) -> Path:
    """Write the violations as Parquet, atomically (temporary file in the same directory, rename)."""
    import pyarrow.parquet as pq

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(report.violations.to_arrow().cast(REPORT_SCHEMA), tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(target)
    return target

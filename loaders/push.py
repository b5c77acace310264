"""Push runs, redeliveries and catch-up pulls as batch jobs call them (SPEC §5a, DESIGN Safety).

A run, per due subscription: compute → stage (the run's parameters, manifest and provided
records under `<store>/push_staging/`) → write the file to the outbox (temporary name, fsync,
rename: the moment of delivery) → its manifest; then, for all the run's subscriptions at once,
commit the provision records, the request rows (each carrying the subscription's Delta app
transaction, so a commit is never repeated) and the `push_runs` rows (the watermarks move);
then drop the staging. The next run first finishes every staged run: a staged run whose file is
in the outbox is completed with the same id and file (that run counts as its period's run); one
whose file never appeared never happened, and its subscription is due again. A crash at any
point neither skips nor duplicates: the window only moves with the `push_runs` row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine.access import authorize
from engine.dates import iso_jst
from engine.errors import AccessRefused, JukiError, StoreUnavailable, UsageError
from engine.push import (
    Plan,
    app_id,
    commit_runs,
    deliveries,
    is_due,
    next_number,
    push_request_id,
    read_runs,
    run_id_of,
    watermark,
)
from engine.schema import RECORD_COLUMNS
from engine.store import Store
from engine.subscriptions import (
    PUSH_LOCK,
    Targets,
    get_subscription,
    parse_targets,
    read_subscriptions,
)
from loaders.outputs import OutputOptions, manifest_bytes, render, write_atomically
from loaders.requests import read_request

Checkpoint = Callable[[str], None]
STAGING = "push_staging"


@dataclass(frozen=True)
class Staged:
    """A run between its computation and its last commit (what `push_staging` holds)."""

    subscription: str
    run_id: str
    run_at: dt.datetime
    number: int
    agency: str
    affair: str
    interval: str
    after: int
    upto: int
    rows: int
    file: str
    sha256: str
    request_id: str
    columns: list[str]
    parameters: dict[str, Any]
    manifest: str
    provided: pl.DataFrame = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "provided"}
        return {**out, "run_at": self.run_at.isoformat()}

    @classmethod
    def from_json(cls, body: dict[str, Any], provided: pl.DataFrame) -> Staged:
        return cls(**{**body, "run_at": dt.datetime.fromisoformat(body["run_at"]),
                      "provided": provided})  # fmt: skip


@dataclass(frozen=True)
class Delivered:
    subscription: str
    run_id: str
    rows: int
    file: str
    completed: bool = False  # finished after an interrupted run

    def to_json(self) -> dict[str, Any]:
        return {"subscription": self.subscription, "run": self.run_id, "rows": self.rows,
                "file": self.file, "completed": self.completed}  # fmt: skip


@dataclass(frozen=True)
class PushSummary:
    run_id: str
    upto: int
    delivered: list[Delivered]
    refused: list[tuple[str, str]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run_id, "upto_batch": self.upto,
                "delivered": [d.to_json() for d in self.delivered],
                "refused": [{"subscription": s, "reason": r} for s, r in self.refused],
                "seconds": round(self.seconds, 3)}  # fmt: skip


# -- staging -------------------------------------------------------------------------------------
def _staging(store: Store) -> Path:
    return store.path / STAGING


def _stage(store: Store, run: Staged) -> None:
    base = _staging(store) / run.subscription / run.run_id
    data = run.provided.write_ipc(None).getvalue()
    write_atomically(base.with_name(f"{run.run_id}.provided.arrow"), data)
    text = json.dumps(run.to_json(), ensure_ascii=False, sort_keys=True).encode("utf-8")
    write_atomically(base.with_name(f"{run.run_id}.json"), text)  # the marker: written last


def _unstage(store: Store, run: Staged) -> None:
    base = _staging(store) / run.subscription
    base.joinpath(f"{run.run_id}.json").unlink(missing_ok=True)
    base.joinpath(f"{run.run_id}.provided.arrow").unlink(missing_ok=True)


def _staged(store: Store) -> list[Staged]:
    """Every staged run, oldest first; leftovers of interrupted writes are removed."""
    root = _staging(store)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*/*")):
        if path.name.startswith("."):
            path.unlink(missing_ok=True)  # a temporary file of an interrupted write
    for marker in sorted(root.glob("*/*.json")):
        data = marker.with_name(marker.name[:-5] + ".provided.arrow").read_bytes()
        provided = pl.read_ipc(io.BytesIO(data))
        out.append(Staged.from_json(json.loads(marker.read_text(encoding="utf-8")), provided))
    for path in sorted(root.glob("*/*.provided.arrow")):
        if not path.with_name(path.name[: -len(".provided.arrow")] + ".json").exists():
            path.unlink()
    return sorted(out, key=lambda r: (r.run_at, r.subscription))


def _clean_outbox_dir(directory: Path) -> None:
    """Remove temporary files an interrupted write left (the outbox holds only deliveries)."""
    if directory.is_dir():
        for path in directory.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def _recorded(store: Store, path: Path) -> str:
    """How a file is recorded: relative to the store when inside it (stores can move)."""
    try:
        return str(path.absolute().relative_to(store.path.absolute()))
    except ValueError:
        return str(path.absolute())


def _located(store: Store, recorded: str) -> Path:
    path = Path(recorded)
    return path if path.is_absolute() else store.path / path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- committing ----------------------------------------------------------------------------------
def _commit(store: Store, runs: list[Staged], checkpoint: Checkpoint) -> None:
    """Provision records, then request rows, then `push_runs` (each skipped for runs whose app
    transaction shows it committed already), then drop the staging."""
    import pyarrow as pa

    from engine.appends import append, transaction_versions
    from engine.provision import append_provisions, provision_rows
    from engine.requests import REQUESTS_SCHEMA, request_row

    if not runs:
        return
    apps = [app_id(r.subscription) for r in runs]
    done = transaction_versions(store.table_path("provisions"), apps)
    todo = [r for r in runs if r.rows and done[app_id(r.subscription)] < r.number]
    if todo:
        records = pl.concat([
            provision_rows(r.provided, agency=r.agency, affair=r.affair, function="push",
                           request_id=r.request_id, provided_at=r.run_at)
            for r in todo
        ])  # fmt: skip
        append_provisions(store, records,
                          transactions={app_id(r.subscription): r.number for r in todo})  # fmt: skip
    checkpoint("provisions")
    done = transaction_versions(store.table_path("requests"), apps)
    todo = [r for r in runs if done[app_id(r.subscription)] < r.number]
    if todo:
        finished = dt.datetime.now(dt.UTC)
        rows = [request_row(request_id=r.request_id, requested_at=r.run_at, agency=r.agency,
                            affair=r.affair, function="push", parameters=r.parameters,
                            columns=[c for c in r.columns if c in RECORD_COLUMNS], status="provided",
                            rows=r.rows, output=r.file, output_sha256=r.sha256,
                            finished_at=finished) for r in todo]  # fmt: skip
        append(store.table_path("requests"), pa.Table.from_pylist(rows, schema=REQUESTS_SCHEMA),
               transactions={app_id(r.subscription): r.number for r in todo})  # fmt: skip
    checkpoint("requests")
    committed = dt.datetime.now(dt.UTC)
    commit_runs(store, [{
        **r.to_json(), "run_at": r.run_at, "committed_at": committed,
        "provided_codes": r.provided["resident_code"].to_list(),
        "provided_columns": r.provided["columns"].to_list(),
    } for r in runs])  # fmt: skip
    checkpoint("runs")
    for r in runs:
        _unstage(store, r)
    checkpoint("unstaged")


def complete_interrupted(store: Store, checkpoint: Checkpoint) -> list[Delivered]:
    """Finish every staged run whose file is in the outbox; forget those whose file is not."""
    runs = read_runs(store)
    delivered = set(zip(runs["subscription"].to_list(), runs["run_id"].to_list(), strict=True))
    pending = []
    for run in _staged(store):
        path = _located(store, run.file)
        _clean_outbox_dir(path.parent)
        if (run.subscription, run.run_id) in delivered:
            _unstage(store, run)
        elif not path.exists():
            path.with_name(path.name + ".manifest.json").unlink(missing_ok=True)
            _unstage(store, run)  # never delivered: the subscription is due again
        elif _sha256(path) != run.sha256:
            raise StoreUnavailable(f"{path}: differs from the run staged in {STAGING} "
                                   "(SHA-256); remove it to redo the run")  # fmt: skip
        else:
            manifest = path.with_name(path.name + ".manifest.json")
            body = run.manifest.encode("utf-8")
            if not manifest.exists() or manifest.read_bytes() != body:
                write_atomically(manifest, body)
            pending.append(run)
    _commit(store, pending, checkpoint)
    return [Delivered(r.subscription, r.run_id, r.rows, r.file, completed=True) for r in pending]


# -- a run ---------------------------------------------------------------------------------------
def _prepare(store: Store, plan: Plan, frame: pl.DataFrame, provided: pl.DataFrame, *,
             at: dt.datetime, upto: int, number: int, outbox: Path,
             stamps: dict[int, str | None]) -> tuple[Staged, bytes]:  # fmt: skip
    sub, grant = plan.subscription, plan.grant
    run_id = run_id_of(at)
    path = outbox / sub.agency / sub.name / f"{run_id}.parquet"
    options = OutputOptions(path)
    data, _ = render(frame, options)
    digest = hashlib.sha256(data).hexdigest()
    request_id = push_request_id(sub.name, run_id)
    new_mark = max(upto, plan.after)
    parameters = {"subscription": sub.name, "run": run_id, "interval": sub.interval,
                  "after_batch": plan.after, "upto_batch": new_mark,
                  "since": stamps[plan.after], "until": stamps[new_mark]}  # fmt: skip
    head = {"request_id": request_id, "requested_at": iso_jst(at), "agency": sub.agency,
            "affair": sub.affair, "function": "push", "parameters": parameters,
            "columns": grant.output_columns}  # fmt: skip
    manifest = manifest_bytes(head, options, rows=frame.height, sha256=digest, replaced=0)
    staged = Staged(
        subscription=sub.name, run_id=run_id, run_at=at, number=number, agency=sub.agency,
        affair=sub.affair, interval=sub.interval, after=plan.after, upto=new_mark,
        rows=frame.height, file=_recorded(store, path), sha256=digest, request_id=request_id,
        columns=frame.columns, parameters=parameters, manifest=manifest.decode("utf-8"),
        provided=provided,
    )  # fmt: skip
    return staged, data


def _stamps(store: Store, batches: set[int]) -> dict[int, str | None]:
    from engine.resolve import batch_stamp

    out: dict[int, str | None] = {}
    for b in batches:
        stamp = batch_stamp(store, b)
        out[b] = iso_jst(stamp) if stamp is not None else None
    return out


def run_push(
    store: Store,
    *,
    at: dt.datetime,
    outbox: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> PushSummary:
    """`juki push run --now TS`: deliver every subscription due at TS (SPEC §5a).

    Refused subscriptions (the registry no longer allows them `push`) are recorded and skipped;
    AccessRefused (exit 3) is raised after the others were delivered.
    """
    from engine.resolve import known_batch

    started = time.perf_counter()
    mark = checkpoint or (lambda point: None)
    outbox = outbox if outbox is not None else store.path / "outbox"
    store.require()
    with store.writer(f"juki push run {run_id_of(at)}", lock=PUSH_LOCK):
        done = complete_interrupted(store, mark)
        runs = read_runs(store)
        subs = [s for s in read_subscriptions(store).values() if is_due(s, runs, at)]
        plans, refused = [], []
        for sub in subs:
            try:
                grant = authorize(store, agency=sub.agency, affair=sub.affair, function="push",
                                  columns=None, parameters={"subscription": sub.name,
                                                            "run": run_id_of(at)}, now=at)  # fmt: skip
            except AccessRefused as e:
                refused.append((sub.name, str(e)))
                continue
            plans.append(Plan(sub, grant, watermark(sub, runs)))
        upto = known_batch(store, at) or 0
        results = deliveries(store, plans, upto=upto, progress=progress)
        stamps = _stamps(store, {p.after for p in plans} | {max(upto, p.after) for p in plans})
        staged = []
        for plan, (frame, provided) in zip(plans, results, strict=True):
            run, data = _prepare(store, plan, frame, provided, at=at, upto=upto,
                                 number=next_number(plan.subscription, runs), outbox=outbox,
                                 stamps=stamps)  # fmt: skip
            _stage(store, run)
            mark("staged")
            staged.append((run, data))
        for run, data in staged:
            path = _located(store, run.file)
            write_atomically(path, data)
            mark("file")
            write_atomically(path.with_name(path.name + ".manifest.json"),
                             run.manifest.encode("utf-8"))  # fmt: skip
            mark("manifest")
        _commit(store, [r for r, _ in staged], mark)
    delivered = done + [Delivered(r.subscription, r.run_id, r.rows, r.file) for r, _ in staged]
    summary = PushSummary(run_id_of(at), upto, delivered, refused, time.perf_counter() - started)
    if refused:
        names = "; ".join(f"{s}: {r}" for s, r in refused)
        raise PushRefused(summary, f"push run {summary.run_id}: {len(delivered)} delivered, "
                                   f"{len(refused)} refused ({names})")  # fmt: skip
    return summary


class PushRefused(AccessRefused):
    """Some subscriptions were refused (exit 3); the others were delivered (`summary`)."""

    def __init__(self, summary: PushSummary, message: str) -> None:
        super().__init__(message)
        self.summary = summary


# -- redelivery and catch-up ---------------------------------------------------------------------
@dataclass(frozen=True)
class Provided:
    request_id: str
    rows: int
    recorded: int
    path: str
    sha256: str
    runs: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "rows": self.rows, "recorded": self.recorded,
                "out": self.path, "sha256": self.sha256, "runs": self.runs,
                "seconds": round(self.seconds, 3)}  # fmt: skip


def _delivered_runs(store: Store, name: str) -> pl.DataFrame:
    return read_runs(store, provided=True, subscription=name)


def _verified(store: Store, run: dict[str, Any]) -> bytes:
    """The delivered file's bytes, checked against the SHA-256 its run committed."""
    path = _located(store, run["file"])
    if not path.is_file():
        raise StoreUnavailable(f"{path}: the delivered file of run {run['run_id']} is missing "
                               "from the outbox")  # fmt: skip
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != run["sha256"]:
        raise StoreUnavailable(f"{path}: the delivered file of run {run['run_id']} is damaged "
                               "(SHA-256 differs from push_runs)")  # fmt: skip
    return data


def _provided_of(runs: list[dict[str, Any]]) -> pl.DataFrame:
    codes = [c for r in runs for c in r["provided_codes"] or []]
    columns = [c for r in runs for c in r["provided_columns"] or []]
    return pl.DataFrame({"resident_code": codes, "columns": columns},
                        schema={"resident_code": pl.String, "columns": pl.String})  # fmt: skip


def redeliver(
    store: Store, name: str, run_id: str, *, out: Path | None, now: dt.datetime
) -> Provided:
    """`juki push redeliver`: the delivered file again, byte-identical, recorded as provided
    again under a new request id (default `--out`: `<run id>.parquet` here)."""
    from engine.provision import record_provisions
    from engine.requests import record_request

    started = time.perf_counter()
    store.require()
    sub = get_subscription(store, name)
    runs = _delivered_runs(store, name).filter(pl.col("run_id") == run_id).to_dicts()
    if not runs:
        raise UsageError(f"--run '{run_id}': no delivered run of subscription '{name}'")
    run = runs[0]
    data = _verified(store, run)
    target = out if out is not None else Path(f"{run_id}.parquet")
    parameters = {"subscription": name, "run": run_id, "redelivery_of": run["request_id"]}
    grant = authorize(store, agency=sub.agency, affair=sub.affair, function="push",
                      columns=None, parameters=parameters, now=now)  # fmt: skip
    request: dict[str, Any] = {"request_id": grant.request_id, "requested_at": now,
                               "agency": sub.agency, "affair": sub.affair, "function": "push",
                               "parameters": parameters, "columns": grant.output_columns}  # fmt: skip
    try:
        recorded = record_provisions(store, _provided_of([run]), grant, provided_at=now)
        write_atomically(target, data)
        options = OutputOptions(target)
        write_atomically(options.manifest_path,
                         manifest_bytes({**request, "requested_at": iso_jst(now)}, options,
                                        rows=int(run["rows"]), sha256=run["sha256"],
                                        replaced=0))  # fmt: skip
    except JukiError as e:
        record_request(store, **request, status="failed", refused_reason=str(e))
        raise
    record_request(store, **request, status="provided", rows=int(run["rows"]),
                   output=str(target), output_sha256=run["sha256"])  # fmt: skip
    return Provided(grant.request_id, int(run["rows"]), recorded, str(target), run["sha256"],
                    [run_id], time.perf_counter() - started)  # fmt: skip


def pull(
    store: Store, name: str, *, since: dt.datetime, output: OutputOptions, now: dt.datetime
) -> Provided:
    """`juki push pull`: the rows of the subscription's runs delivered after `since` (run TS),
    in delivery order, as one file with its manifest; recorded as provided again."""
    from loaders.provide import Provision, provide

    started = time.perf_counter()
    output.check()
    store.require()
    sub = get_subscription(store, name)
    runs = _delivered_runs(store, name).filter(pl.col("run_at") > since).to_dicts()
    frames = [pl.read_parquet(io.BytesIO(_verified(store, r))) for r in runs]  # checked first
    parameters = {"subscription": name, "since": iso_jst(since),
                  "runs": [{"run": r["run_id"], "rows": r["rows"], "sha256": r["sha256"]}
                           for r in runs]}  # fmt: skip

    def compute(grant: Any) -> Provision:
        from engine.changes import empty_output

        table = (pl.concat(frames, how="diagonal_relaxed") if frames else empty_output(grant))
        return Provision(table, _provided_of(runs))

    summary = provide(store, agency=sub.agency, affair=sub.affair, function="push",
                      columns=None, parameters=parameters, output=output, now=now,
                      compute=compute)  # fmt: skip
    return Provided(summary.request_id, summary.rows, summary.recorded, summary.path,
                    summary.sha256, [r["run_id"] for r in runs], time.perf_counter() - started)


def subscription_rows(store: Store) -> list[dict[str, Any]]:
    """`juki subscribe list`: each subscription with its watermark and last run."""
    runs = read_runs(store)
    out = []
    for sub in read_subscriptions(store).values():
        mine = runs.filter(pl.col("subscription") == sub.name)
        out.append({**sub.to_json(), "watermark": watermark(sub, runs), "runs": mine.height,
                    "last_run": mine["run_id"][-1] if mine.height else None})  # fmt: skip
    return out


def read_targets(path: str | Path) -> Targets:
    """A target file (SPEC §5 request file: `my_number` or `resident_code`), codes parsed."""
    request = read_request(path)
    return parse_targets(request.kind, request.codes, source=request.path, sha256=request.sha256)

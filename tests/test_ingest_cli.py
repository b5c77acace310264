"""`juki ingest` as operators and batch jobs see it: real processes, exit codes, stdout, stderr,
rejects files (SPEC §4, §7).

Exit codes are checked in real subprocesses, several times over (DESIGN.md "Known hazard": a
process can abort at exit after Arrow work, so one lucky run proves little).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import (
    CHIYODA,
    SHIBUYA,
    Municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)

from engine.errors import InputRejected
from engine.schema import NOTIFICATION_COLUMNS
from loaders.notifications import read_notifications

_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]
REJECTS_HEADER = ["file", "row", "municipality_code", "seq", "column", "rule", "message"]
JSON_KEYS = ["file", "applied", "rejected", "duplicate", "held", "released"]
REPEATS = 3


def run_juki(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JUKI_STORE"}
    return subprocess.run(
        [*JUKI, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def json_line(**counts: Any) -> str:
    """The compact JSON line SPEC §4 prescribes, keys in the SPEC's order."""
    full = {"file": counts.pop("file"), "applied": 0, "rejected": 0, "duplicate": 0, "held": 0,
            "released": 0, **counts}  # fmt: skip
    return json.dumps(full, ensure_ascii=False, separators=(",", ":"))


def bad_check_digit(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def registration(sender: Municipality, persons: range) -> list[dict[str, Any]]:
    return [row(sender, "A4", "2024-01-01", person(i)) for i in persons]


def write_parquet_text(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A notification file as Parquet with every column text (SPEC §4 allows it)."""
    columns = {c: pa.array([r[c] for r in rows], pa.string()) for c in NOTIFICATION_COLUMNS}
    pq.write_table(pa.table(columns), path)
    return path


def store_listing(store: Path) -> dict[str, tuple[int, int]]:
    """Every file of a store with its size and mtime: equal listings mean nothing was written."""
    return {
        str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def journal_files(store: Path) -> list[str]:
    journal = pl.read_delta(str(store / "journal"))
    return journal.filter(pl.col("outcome") == "file").sort("batch")["file"].to_list()


def read_rejects(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


# -- rejected rows and the rejects files ---------------------------------------------------------
def test_rows_breaking_rules_are_rejected_with_exit_0_and_listed_one_line_each_in_the_rejects_csv(
    tmp_path: Path,
) -> None:
    chi = Municipality(CHIYODA)
    rows = [
        row(chi, "A4", "2024-01-01", person(0)),
        row(chi, "A4", "2024-01-01", person(1, resident_code=bad_check_digit(resident_code(1)))),
        row(chi, "A4", "2024-01-01", person(2, surname_kana="やまだ")),
        row(chi, "A4", "2024-01-01", person(3, sex="3")),
        row(chi, "A4", "2024-01-01", person(4, surname=None)),
        row(chi, "Z9", "2024-01-01", person(5)),
        row(chi, "M1", "2024-01-02", person(7)),
        row(chi, "A4", "2024-01-01", person(8, my_number=my_number(0))),
        row(chi, "A4", "2024-01-01", person(9, given_name='花子, "はな"')),
    ]
    write_csv(tmp_path / "month.csv", rows)

    result = run_juki("ingest", "month.csv", "--rejects", "out/rejects", "--json", "--store",
                      "store", cwd=tmp_path)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout == json_line(file="month.csv", applied=2, rejected=7) + "\n"
    lines = read_rejects(tmp_path / "out" / "rejects" / "month.rejects.csv")
    assert lines[0] == REJECTS_HEADER
    # (row, seq, column or None when the SPEC leaves it open, rule)
    expected = [
        (2, "resident_code", "check-digit"),
        (3, "surname_kana", "kana"),
        (4, "sex", "sex"),
        (5, "surname", "missing-field"),
        (6, "reason", "unknown-reason"),
        (7, None, "unknown-person"),
        (8, None, "code-issued"),
    ]
    assert len(lines) == 1 + len(expected)
    for line, (n, column, rule) in zip(lines[1:], expected, strict=True):
        file_, row_, municipality_code, seq, col, rule_, message = line
        assert (file_, row_, municipality_code, seq, rule_) == (
            "month.csv", str(n), CHIYODA, str(n), rule
        )  # fmt: skip
        if column is not None:
            assert col == column
        assert message.strip() and "\n" not in message


def test_files_sharing_a_stem_get_numbered_rejects_files_and_a_clean_file_gets_none(
    tmp_path: Path,
) -> None:
    chi, shi = Municipality(CHIYODA), Municipality(SHIBUYA)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_csv(tmp_path / "a" / "batch.csv", [
        row(chi, "A4", "2024-01-01", person(0)),
        row(chi, "A4", "2024-01-01", person(1, sex="7")),
    ])  # fmt: skip
    write_csv(tmp_path / "clean.csv", [row(chi, "A4", "2024-01-01", person(2))])
    write_parquet_text(tmp_path / "b" / "batch.parquet", [
        row(shi, "A4", "2024-01-01", person(3, municipality_code=SHIBUYA, address="東京都渋谷区1")),
        row(shi, "M1", "2024-01-02", person(99, municipality_code=SHIBUYA)),
    ])  # fmt: skip

    result = run_juki("ingest", "a/batch.csv", "clean.csv", "b/batch.parquet", "--rejects",
                      "rejects", "--store", "store", cwd=tmp_path)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "rejects")) == ["batch.2.rejects.csv", "batch.rejects.csv"]
    first = read_rejects(tmp_path / "rejects" / "batch.rejects.csv")
    second = read_rejects(tmp_path / "rejects" / "batch.2.rejects.csv")
    assert first[0] == second[0] == REJECTS_HEADER
    assert [r[:6] for r in first[1:]] == [["a/batch.csv", "2", CHIYODA, "2", "sex", "sex"]]
    assert [r[:4] + r[5:6] for r in second[1:]] == [
        ["b/batch.parquet", "2", SHIBUYA, "2", "unknown-person"]
    ]


def test_a_held_row_rejected_when_released_counts_in_the_releasing_file_and_keeps_its_own_file_and_row(
    tmp_path: Path,
) -> None:
    chi = Municipality(CHIYODA)
    first = registration(chi, range(2))  # seq 1, 2
    gap = row(chi, "M1", "2024-01-02", person(1))  # seq 3: sent later
    waiting = row(chi, "M1", "2024-01-03", person(77))  # seq 4: held, unknown person
    write_csv(tmp_path / "early.csv", [*first, waiting])
    write_csv(tmp_path / "late.csv", [gap])

    result = run_juki("ingest", "early.csv", "late.csv", "--json", "--rejects", "rejects",
                      "--store", "store", cwd=tmp_path)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        json_line(file="early.csv", applied=2, held=1),
        json_line(file="late.csv", applied=1, rejected=1),
    ]
    assert os.listdir(tmp_path / "rejects") == ["late.rejects.csv"]
    lines = read_rejects(tmp_path / "rejects" / "late.rejects.csv")
    assert [r[:4] + r[5:6] for r in lines[1:]] == [
        ["early.csv", "3", CHIYODA, "4", "unknown-person"]
    ]


# -- --json ----------------------------------------------------------------------------------------
def test_json_prints_exactly_one_compact_object_per_file_and_nothing_else_on_stdout(
    tmp_path: Path,
) -> None:
    chi = Municipality(CHIYODA)
    reg = registration(chi, range(3))  # seq 1-3
    changes = [
        row(chi, "M1", "2024-02-01", person(0, address="東京都千代田区2-2")),  # seq 4 applied
        row(chi, "A4", "2024-02-01", person(5, my_number=bad_check_digit(my_number(5)))),  # 5
        reg[0],  # duplicate
    ]
    chi.seq += 1  # seq 6 is sent later
    changes.append(row(chi, "M1", "2024-02-03", person(1, address="東京都千代田区3-3")))  # 7 held
    chi.seq = 5
    later = [row(chi, "M1", "2024-02-02", person(2, address="東京都千代田区4-4"))]  # 6, releases 7
    write_csv(tmp_path / "reg.csv", reg)
    write_csv(tmp_path / "changes.csv", changes)
    write_csv(tmp_path / "later.csv", later)

    result = run_juki("ingest", "reg.csv", "changes.csv", "later.csv", "--json", "--store",
                      "store", cwd=tmp_path)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(line + "\n" for line in [
        json_line(file="reg.csv", applied=3),
        json_line(file="changes.csv", applied=1, rejected=1, duplicate=1, held=1),
        json_line(file="later.csv", applied=1, released=1),
    ])  # fmt: skip
    for line in result.stdout.splitlines():
        assert list(json.loads(line)) == JSON_KEYS


def test_json_names_each_file_exactly_as_given_even_with_brackets_and_colons(
    tmp_path: Path,
) -> None:
    name = "tokyo[b]:smile:[13].csv"
    write_csv(tmp_path / name, registration(Municipality(CHIYODA), range(2)))

    result = run_juki("ingest", name, "--json", "--store", "store", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == json_line(file=name, applied=2) + "\n"


def test_a_row_held_and_released_within_one_file_counts_as_held_and_released_not_applied(
    tmp_path: Path,
) -> None:
    """SPEC §4: `released` counts held rows "earlier in this file" applied while it was processed,
    not included in `applied`; the four read counts add up to the file's rows."""
    chi = Municipality(CHIYODA)
    rows = registration(chi, range(3))
    write_csv(tmp_path / "shuffled.csv", [rows[1], rows[0], rows[2]])  # seq 2 arrives before 1

    result = run_juki("ingest", "shuffled.csv", "--json", "--store", "store", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["applied"] + counts["rejected"] + counts["duplicate"] + counts["held"] == 3
    assert result.stdout == json_line(file="shuffled.csv", applied=2, held=1, released=1) + "\n"


def test_a_row_held_and_released_within_one_file_is_no_longer_held_and_does_not_block_the_next_call(
    tmp_path: Path,
) -> None:
    chi = Municipality(CHIYODA)
    rows = registration(chi, range(3))
    write_csv(tmp_path / "shuffled.csv", [rows[1], rows[0], rows[2]])  # seq 2 arrives before 1
    write_csv(tmp_path / "next.csv", registration(chi, range(3, 5)))  # seq 4, 5

    first = run_juki("ingest", "shuffled.csv", "--store", "store", cwd=tmp_path)
    held = run_juki("held", "list", "--json", "--store", "store", cwd=tmp_path)
    second = run_juki("ingest", "next.csv", "--json", "--store", "store", cwd=tmp_path)

    assert (first.returncode, held.returncode, second.returncode) == (0, 0, 0)
    assert json.loads(held.stdout) == []
    assert second.stdout == json_line(file="next.csv", applied=2) + "\n"


# -- exit 4: a file unreadable as a whole --------------------------------------------------------
def _unreadable_call(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Files for one call: good, three unreadable ones, good; returns (args, bad names)."""
    chi = Municipality(CHIYODA)
    write_csv(tmp_path / "first.csv", registration(chi, range(2)))
    noise = random.Random(7).randbytes(600)
    (tmp_path / "garbage.parquet").write_bytes(noise)
    (tmp_path / "truncated.parquet").write_bytes(b"PAR1" + noise[:200])
    lacking = [{k: v for k, v in r.items() if k != "reason"}
               for r in registration(chi, range(2, 3))]  # fmt: skip
    with open(tmp_path / "no-reason.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in NOTIFICATION_COLUMNS if c != "reason"])
        w.writeheader()
        w.writerows({k: v or "" for k, v in r.items()} for r in lacking)
    chi.seq = 2
    write_csv(tmp_path / "last.csv", registration(chi, range(10, 12)))  # seq 3, 4
    bad = ["garbage.parquet", "truncated.parquet", "no-reason.csv"]
    return ["first.csv", *bad, "last.csv"], bad


def test_unreadable_files_exit_4_with_an_error_json_line_and_the_later_files_are_still_applied(
    tmp_path: Path,
) -> None:
    files, bad = _unreadable_call(tmp_path)
    for attempt in range(2):
        store = f"store-{attempt}"
        result = run_juki("ingest", *files, "--json", "--store", store, cwd=tmp_path)

        assert result.returncode == 4, result.stderr
        assert "Traceback" not in result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["file"] for line in lines] == files
        assert lines[0] == json.loads(json_line(file="first.csv", applied=2))
        assert lines[-1] == json.loads(json_line(file="last.csv", applied=2))
        for line, name in zip(lines[1:-1], bad, strict=True):
            assert list(line) == ["file", "error"]
            assert name in line["error"] and "\n" not in line["error"]
        assert journal_files(tmp_path / store) == ["first.csv", "last.csv"]


def test_with_json_each_unreadable_file_still_has_one_stderr_line_equal_to_its_error(
    tmp_path: Path,
) -> None:
    """SPEC §4: the JSON line is {"file": …, "error": "<the stderr line>"}; §7: one line on
    stderr naming the file, whatever the output mode."""
    files, bad = _unreadable_call(tmp_path)
    result = run_juki("ingest", *files, "--json", "--store", "store", cwd=tmp_path)

    assert result.returncode == 4
    errors = {json.loads(x)["file"]: json.loads(x).get("error") for x in result.stdout.splitlines()}
    lines = stderr_lines(result)
    for name in bad:
        assert [line for line in lines if name in line] == [errors[name]]


def test_without_json_each_unreadable_file_is_named_on_exactly_one_whole_stderr_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, bad = _unreadable_call(tmp_path)
    monkeypatch.chdir(tmp_path)
    errors = {}
    for name in bad:
        with pytest.raises(InputRejected) as e:
            read_notifications(name)
        errors[name] = str(e.value)

    result = run_juki("ingest", *files, "--store", "store", cwd=tmp_path)

    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    for name in bad:
        assert [line for line in lines if name in line] == [errors[name]]
    assert journal_files(tmp_path / "store") == ["first.csv", "last.csv"]


# -- exit 2: a named file that does not exist ------------------------------------------------------
def test_a_missing_file_exits_2_naming_it_before_any_file_is_applied(tmp_path: Path) -> None:
    chi = Municipality(CHIYODA)
    write_csv(tmp_path / "reg.csv", registration(chi, range(3)))
    write_csv(tmp_path / "new.csv", registration(chi, range(3, 6)))
    assert run_juki("ingest", "reg.csv", "--store", "store", cwd=tmp_path).returncode == 0
    before = store_listing(tmp_path / "store")

    for args in (["new.csv", "missing.csv"], ["missing.csv", "new.csv"]) * 2:
        result = run_juki("ingest", *args, "--json", "--store", "store", cwd=tmp_path)

        assert result.returncode == 2
        assert result.stdout == ""
        lines = stderr_lines(result)
        assert len(lines) == 1 and "missing.csv" in lines[0]
        assert "Traceback" not in result.stderr
        assert store_listing(tmp_path / "store") == before


def test_a_missing_file_exits_2_without_creating_the_store(tmp_path: Path) -> None:
    write_csv(tmp_path / "new.csv", registration(Municipality(CHIYODA), range(2)))

    result = run_juki("ingest", "new.csv", "gone.parquet", "--store", "store", cwd=tmp_path)

    assert result.returncode == 2
    assert not (tmp_path / "store" / "journal").exists()


# -- exit 5: a store locked by another writer ------------------------------------------------------
HOLDER = """
import sys
from engine.store import Store
with Store(sys.argv[1]).writer("test holder"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_locked_store_exits_5_naming_the_holder_every_time(tmp_path: Path) -> None:
    write_csv(tmp_path / "reg.csv", registration(Municipality(CHIYODA), range(3)))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "store"], cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        for _ in range(REPEATS):
            result = run_juki("ingest", "reg.csv", "--json", "--store", "store", cwd=tmp_path)

            assert result.returncode == 5
            assert result.stdout == ""
            lines = stderr_lines(result)
            assert len(lines) == 1, result.stderr
            assert "test holder" in lines[0] and str(holder.pid) in lines[0]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()

    after = run_juki("ingest", "reg.csv", "--json", "--store", "store", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert after.stdout == json_line(file="reg.csv", applied=3) + "\n"


# -- exit 0, again and again -----------------------------------------------------------------------
def test_ingest_exits_0_on_every_run_after_its_arrow_and_delta_work(tmp_path: Path) -> None:
    chi = Municipality(CHIYODA)
    names = []
    for k in range(3):
        names.append(f"part-{k}.csv")
        write_csv(tmp_path / names[-1], registration(chi, range(50 * k, 50 * k + 50)))
    codes = []
    for store in ("store", "store", "fresh"):  # applied, all duplicates, applied
        result = run_juki("ingest", *names, "--json", "--rejects", "rej", "--store", store,
                          cwd=tmp_path)  # fmt: skip
        codes.append(result.returncode)
        assert "Traceback" not in result.stderr
        assert len(result.stdout.splitlines()) == len(names)
    assert codes == [0, 0, 0]


@pytest.mark.parametrize("option", ["--encoding", "--rejects"])
def test_an_option_without_its_value_is_a_usage_error_exit_2(tmp_path: Path, option: str) -> None:
    write_csv(tmp_path / "reg.csv", registration(Municipality(CHIYODA), range(1)))

    result = run_juki("ingest", "reg.csv", "--store", "store", option, cwd=tmp_path)

    assert result.returncode == 2
    assert len(stderr_lines(result)) == 1 and option in result.stderr
    assert not (tmp_path / "store" / "journal").exists()

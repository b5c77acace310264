"""SPEC §7 for stores that are missing or damaged: exit 5 and one line on stderr naming the store
or the damaged file, never a traceback (nor a Rust library's panic report)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agency import load, run_juki, write_request
from builders import CHIYODA, Municipality, my_number, person, row, write_csv
from stories import ingest_at

from engine.store import Store


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    store = Store(tmp_path / "store")
    rows = [row(Municipality(CHIYODA), "A4", "2024-01-01", person(1))]
    ingest_at(store, write_csv(tmp_path / "a.csv", rows), dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    load(store, tmp_path)
    write_request(tmp_path / "req.csv", "my_number", [my_number(1)])
    return tmp_path


@pytest.mark.parametrize(
    "command",
    [["registry", "show"], ["audit", "requests"], ["subscribe", "list"], ["store", "info"],
     ["held", "list"], ["check"]],
)  # fmt: skip
def test_reading_a_missing_store_exits_5_with_one_line(tmp_path: Path, command: list[str]) -> None:
    result = run_juki(*command, "--store", "nowhere", cwd=tmp_path)
    assert (result.returncode, result.stderr.splitlines()) == (
        5, ["nowhere: no juki store here (run `juki ingest` first)"])  # fmt: skip
    assert not (tmp_path / "nowhere").exists()


def test_a_registry_loaded_before_the_first_ingest_can_be_shown(tmp_path: Path) -> None:
    load(Store(tmp_path / "store"), tmp_path)
    result = run_juki("registry", "show", "--json", "--store", "store", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "JPS" in result.stdout


def _data_file(site: Path, table: str) -> Path:
    from deltalake import DeltaTable

    return Path(DeltaTable(str(site / "store" / table)).file_uris()[0])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize(
    ("table", "command"),
    [("journal", ["check", "--rules", "kana"]),
     ("codes", ["lookup", "req.csv", "--agency", "JPS", "--affair", "pension-change",
                  "--out", "out.parquet"]),
     ("requests", ["audit", "requests"])],
)  # fmt: skip
def test_a_damaged_data_file_exits_5_naming_it(
    site: Path, table: str, command: list[str], damage: str
) -> None:
    if table == "requests":  # a request to list
        run_juki("lookup", "req.csv", "--agency", "JPS", "--affair", "pension-change", "--out",
                 "first.parquet", "--store", "store", cwd=site)  # fmt: skip
    file = _data_file(site, table)
    data = file.read_bytes()
    file.write_bytes(b"garbage\n" if damage == "garbage" else data[: len(data) // 2])
    result = run_juki(*command, "--store", "store", cwd=site)
    assert result.returncode == 5, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"juki: store damaged: {file}: not a Parquet file"), line
    assert not (site / "out.parquet").exists()


@pytest.mark.parametrize("table", ["current_base", "codes"])
def test_a_missing_table_exits_5_naming_it(site: Path, table: str) -> None:
    shutil.rmtree(site / "store" / table)
    result = run_juki("lookup", "req.csv", "--agency", "JPS", "--affair", "pension-change",
                      "--out", "out.parquet", "--store", "store", cwd=site)  # fmt: skip
    assert (result.returncode, result.stderr.splitlines()) == (
        5, [f"juki: store damaged: store/{table}: table missing"])  # fmt: skip


def test_an_unreadable_delta_log_exits_5_naming_the_table(site: Path) -> None:
    log = max((site / "store" / "journal" / "_delta_log").glob("*.json"))
    log.write_text("{not json\n", encoding="utf-8")
    result = run_juki("check", "--rules", "kana", "--store", "store", cwd=site)
    assert result.returncode == 5, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("juki: store damaged: store/journal: its Delta log cannot be read ("), line


FILTERED = r"""
import os, sys
from engine.native_stderr import NativeStderr
native = NativeStderr()
native.start()
os.write(2, b"native line before\n")
os.write(2, b"\nthread 'tokio-rt-worker' (17) panicked at crates/x/src/y.rs:5:9:\n"
            b"assertion failed: range.end as u64 <= self.size\n"
            b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
            b"\nthread 'async-executor-0' panicked at crates/z.rs:1:2:\n"
            b"called `Result::unwrap()` on an `Err` value\n"
            b"stack backtrace:\n   0: rust_begin_unwind\n"
            b"note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n")
print("python's own line", file=sys.stderr)
native.stop()
os.write(2, b"after stop\n")
"""


def test_native_panic_reports_are_kept_off_stderr_and_the_rest_passes() -> None:
    result = subprocess.run([sys.executable, "-c", FILTERED], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    lines = result.stderr.splitlines()
    assert sorted(lines[:2]) == ["native line before", "python's own line"]
    assert lines[2:] == ["after stop"]


@pytest.mark.parametrize("error", [
    OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device"),
    OSError(30, "Read-only file system", "/srv/juki/store/provisions/x.parquet"),
])  # fmt: skip
def test_a_full_or_read_only_disk_is_the_store_unavailable(
    error: OSError, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 5 with one line (SPEC §7), not an internal error: the operator frees space and
    reruns (writes are atomic, a re-run changes nothing twice)."""
    from engine.cli import _unforeseen

    Store(tmp_path / "store")
    assert _unforeseen(error, ["--store", str(tmp_path / "store")]) == 5
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("juki: store unavailable: cannot write: ")
    assert ("No space left on device" if error.errno == 28 else "Read-only file system") in lines[0]
    if error.filename:
        assert error.filename in lines[0]


def test_other_errors_stay_internal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import _unforeseen

    assert _unforeseen(OSError(5, "Input/output error"), ["--store", str(tmp_path / "s")]) == 70
    assert "internal error" in capsys.readouterr().err

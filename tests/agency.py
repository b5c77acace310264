"""The registry the service tests use, and helpers to run services as an agency would."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl

from engine.access import load_registry
from engine.store import Store
from loaders.outputs import OutputOptions
from loaders.services import Requester

PENSION_COLUMNS = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
                   "given_name_kana", "birth_date", "sex", "address", "municipality_code",
                   "status"]  # fmt: skip
ALL_COLUMNS = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
               "given_name_kana", "former_surname", "former_surname_kana", "alias", "birth_date",
               "sex", "municipality_code", "prefecture_code", "address", "resident_kind",
               "status"]  # fmt: skip

REGISTRY = """
[[agency]]
code = "JPS"
name = "日本年金機構"
scope = "national"
prefecture = ""

[[agency]]
code = "TOKYO"
name = "東京都"
scope = "prefecture"
prefecture = "13"

[[agency]]
code = "CITY"
name = "市区町村"
scope = "national"

[[affair]]
code = "pension-change"
name = "国民年金等の被保険者等の異動情報の確認"
basis = "住基法別表第一"
agencies = ["JPS", "TOKYO"]
functions = ["lookup", "changes", "push"]
columns = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
           "given_name_kana", "birth_date", "sex", "address", "municipality_code", "status"]
protected_access = false

[[affair]]
code = "benefit"
name = "特定公的給付"
basis = "公金受取口座登録法"
agencies = ["JPS", "TOKYO", "CITY"]
functions = ["lookup", "changes", "extract", "stats"]
columns = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
           "given_name_kana", "former_surname", "former_surname_kana", "alias", "birth_date",
           "sex", "municipality_code", "prefecture_code", "address", "resident_kind", "status"]
protected_access = false

[[affair]]
code = "dv-support"
name = "支援措置"
basis = "住基法"
agencies = ["CITY"]
functions = ["lookup", "changes", "extract"]
columns = ["resident_code", "surname", "given_name", "municipality_code", "prefecture_code",
           "address"]
protected_access = true

[[affair]]
code = "statistics"
name = "統計"
basis = "統計法"
agencies = ["JPS", "TOKYO"]
functions = ["stats"]
columns = []
"""

NOW = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)
_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]


def load(store: Store, directory: Path) -> Path:
    path = directory / "registry.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    load_registry(store, path, now=NOW)
    return path


def requester(agency: str, affair: str, out: Path, *, columns: list[str] | None = None,
              now: dt.datetime = NOW, **options: Any) -> Requester:  # fmt: skip
    return Requester(agency, affair, OutputOptions(out, **options), columns, now)


def write_request(path: Path, column: str, codes: list[str | None]) -> Path:
    pl.DataFrame({column: codes}, schema={column: pl.String}).write_csv(path)
    return path


def run_juki(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JUKI_STORE"}
    return subprocess.run([*JUKI, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def listing(root: Path) -> dict[str, int]:
    """Every file under root with its size: equal listings mean nothing was written."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}

"""W2 at national size: `juki lookup` of N My Numbers (a random sample of the current base), beside
a Polars and a DuckDB join of the same keys with the current table, each in its own process.

    python -m benchmarks.lookup_scale --store STORE --keys 10_000_000

The store is only read (the registry is loaded into a hard-linked copy under --work). juki's
figure includes reading the request, resolving codes (retired ones too), the as-of read, the
provision records and the output; the baselines join the keys with the current base and delta
(no retired codes, no as-of, no records), writing the joined rows to Parquet.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.baselines import link_copy, sample_my_numbers

REGISTRY = """
[[agency]]
code = "JPS"
name = "日本年金機構"
scope = "national"

[[affair]]
code = "pension-lookup"
name = "年金給付の支給に関する事務"
agencies = ["JPS"]
functions = ["lookup"]
columns = ["resident_code", "my_number", "surname", "given_name", "birth_date", "sex", "address",
           "municipality_code", "status"]
"""
COLUMNS = ["resident_code", "my_number", "surname", "given_name", "birth_date", "sex", "address",
           "municipality_code", "status"]  # fmt: skip


def keys_file(store: Path, work: Path, n: int) -> Path:
    path = work / f"keys-{n}.csv"
    if not path.exists():
        sample_my_numbers(store, n, seed=2, ordered=False).write_csv(path)
    return path


def _timed(args: list[str]) -> tuple[float, float, str]:
    """Seconds, peak GiB (by /usr/bin/time) and the last stderr line of a child process."""
    timer = ["/usr/bin/time", "-f", "peak-kb %M"] if Path("/usr/bin/time").exists() else []
    t = time.perf_counter()
    done = subprocess.run([*timer, *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    lines = done.stderr.strip().splitlines()
    peak = next((int(x.split()[1]) / 2**20 for x in lines if x.startswith("peak-kb")), 0.0)
    rest = [x for x in lines if not x.startswith("peak-kb")]
    if done.returncode != 0:
        return seconds, peak, f"FAILED (exit {done.returncode}): {rest[-1] if rest else ''}"
    return seconds, peak, rest[-1] if rest else ""


POLARS = """
import sys, polars as pl
from deltalake import DeltaTable
keys, store, out, cols = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
cur = pl.concat([pl.scan_delta(store + "/current_base").select(cols),
                 pl.scan_delta(store + "/current_delta").select(cols)])
req = pl.scan_csv(keys, schema={"my_number": pl.String}).with_row_index("request_row")
req.join(cur, on="my_number", how="left").sort("request_row").sink_parquet(out)
"""

DUCKDB = """
import sys, duckdb
from deltalake import DeltaTable
keys, store, out, cols = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
files = [f for n in ("current_base", "current_delta") for f in DeltaTable(store + "/" + n).file_uris()]
listed = ", ".join(f"'{f}'" for f in files)
con = duckdb.connect()
con.sql("SET memory_limit = '16GB'")
con.sql(f'''copy (select r.request_row, {", ".join("c." + c for c in cols.split(",") if c != "my_number")}, r.my_number
          from (select row_number() over () as request_row, my_number
                from read_csv('{keys}', columns = {{'my_number': 'VARCHAR'}}, header = true)) r
          left join (select {cols} from read_parquet([{listed}], union_by_name = true)) c
          using (my_number) order by r.request_row) to '{out}' (format parquet)''')
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--keys", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/juki-lookup"))
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "store"
    if not store.exists():
        link_copy(args.store, store)
    (args.work / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    juki = str(Path(sys.executable).parent / "juki")
    subprocess.run([juki, "registry", "load", str(args.work / "registry.toml"), "--store",
                    str(store)], check=True, capture_output=True)  # fmt: skip
    keys = keys_file(store, args.work, args.keys)
    s, peak, line = _timed([juki, "lookup", str(keys), "--agency", "JPS", "--affair",
                            "pension-lookup", "--out", str(args.work / "juki.parquet"),
                            "--store", str(store)])  # fmt: skip
    print(f"juki lookup, {args.keys:,} keys: {s:.1f} s ({args.keys / s / 1e6:.2f} M keys/s), "
          f"peak {peak:.1f} GiB — {line}")  # fmt: skip
    if args.skip_baselines:
        return
    cols = ",".join(COLUMNS)
    for name, code in (("Polars", POLARS), ("DuckDB", DUCKDB)):
        b, bpeak, bline = _timed([sys.executable, "-c", code, str(keys), str(store),
                                  str(args.work / f"{name.lower()}.parquet"), cols])  # fmt: skip
        note = bline if bline.startswith("FAILED") else ""
        print(f"baseline: {name} join of the keys with the current table: {b:.1f} s "
              f"({args.keys / b / 1e6:.2f} M keys/s), peak {bpeak:.1f} GiB; "
              f"juki {b / s:.1f}× faster {note}")  # fmt: skip


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)

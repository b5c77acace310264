"""Benchmarks: a pytest-benchmark suite at small sizes (`make bench`) and a scale runner
(`python -m benchmarks.scale`). Each prints the baselines measured in the same run."""

import engine  # noqa: F401 - before Polars: its allocator settings (engine/__init__.py)

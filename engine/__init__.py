"""juki engine: the store, the ingest core, the query and check kernels (pure: no CLI, no loaders)."""

import os

# Polars' allocator (jemalloc) hands freed pages back to the kernel after 0.5–1 s: Polars sets
# that decay when imported (polars/__init__.py, after pola-rs/polars#18088) and appends
# `_RJEM_MALLOC_CONF`, whose options win. A batch that frees and allocates gigabytes then spends
# a third of its CPU in the kernel zeroing fresh pages. Keeping freed pages for a minute: a 10 M
# store's month 8.8 → 8.0 s, its page faults 1.44 → 1.08 M; a 125 M load's kernel time 555 →
# 161 s (with the session's other changes). It takes effect when juki is imported before Polars
# (the CLI, `loaders`, the benchmarks); an operator's own `_RJEM_MALLOC_CONF` is left as it is.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:60000,muzzy_decay_ms:60000")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NumPy's BLAS threads spin; juki does no linear algebra

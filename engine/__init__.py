"""juki engine: the store, the ingest core, the query and check kernels (pure: no CLI, no loaders)."""

import os

# Polars' allocator (jemalloc) hands freed pages back to the kernel within moments by its
# built-in settings; a batch that frees and allocates gigabytes then spends a third of its CPU
# in the kernel zeroing fresh pages. Keeping freed pages for a minute: a 10 M-store month's
# ingest 8.8 → 8.0 s, its page faults 1.44 → 1.08 M. jemalloc reads this when Polars loads, so
# it takes effect when juki is imported before Polars (the CLI, the benchmarks); an operator's
# own `_RJEM_MALLOC_CONF` wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:60000,muzzy_decay_ms:60000")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NumPy's BLAS threads spin; juki does no linear algebra

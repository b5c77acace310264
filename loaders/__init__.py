"""juki loaders: reading, validating and writing files; the synthetic population generator."""

import engine  # noqa: F401 - before Polars: its allocator settings (engine/__init__.py)

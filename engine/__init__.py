"""juki engine: the store, the ingest core, the query and check kernels (pure: no CLI, no loaders)."""

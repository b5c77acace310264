"""Benchmarks: a pytest-benchmark suite at small sizes (`make bench`) and a scale runner
(`python -m benchmarks.scale`). Each prints the baselines measured in the same run."""

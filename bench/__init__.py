"""Benchmarks (`make bench`). Each prints its figures and records them in docs/benchmarks.md."""

"""Benchmarks: speed and memory side by side, medians of repeated runs; results in benchmarks/results/."""

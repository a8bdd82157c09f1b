"""Benchmark harness (see bench/run.py and the README, "Performance")."""

"""Helpers for tests, the demo and benchmarks (shipped, like structlog's `testing`)."""

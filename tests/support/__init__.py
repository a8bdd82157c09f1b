"""Helpers for the tests, the demo and the benchmarks: a migrated test database, an
emptied broker, a real worker process, the fault injector. Kept out of the wheel."""

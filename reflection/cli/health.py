"""`reflection health`: the worker's health check for containers and probes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import typer
from pydantic import ValidationError

from reflection.cli.common import EXIT_FAILED, JsonOpt, emit_json, err, out
from reflection.cli.doctor import Check, check_broker, check_lock_redis, check_postgres
from reflection.settings import describe_invalid, get_settings

# What a worker cannot work without; the LLM and folders are `doctor`'s (an LLM outage
# is retried by the runs, and restarting the worker would not end it).
CHECKS = (check_broker, check_lock_redis, check_postgres)


def health(json_: JsonOpt = False) -> None:
    """Exit 0 when the broker, lock Redis and Postgres answer, else 1 (health checks).

    For a Docker HEALTHCHECK, a compose healthcheck or a Kubernetes probe, run where the
    worker runs (same REFLECTION_* settings). Postgres must also be at the migrations'
    head. The three checks run at once, each with a timeout of 5 s or less."""
    try:
        settings = get_settings()
    except ValidationError as e:  # exit 1 too: container runtimes read other codes oddly
        err.print(describe_invalid(e), markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        results: list[Check] = list(pool.map(lambda check: check(settings), CHECKS))
    ok = all(r.ok for r in results)
    if json_:
        emit_json({"ok": ok, "checks": [asdict(r) for r in results]})
    else:
        for r in results:
            out.print(
                f"{'ok' if r.ok else 'FAIL'} {r.name}: {r.detail}", markup=False, soft_wrap=True
            )
    if not ok:
        raise typer.Exit(EXIT_FAILED)

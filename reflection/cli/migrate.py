"""`reflection migrate`: create or upgrade the worker's tables (the shipped migrations)."""

from __future__ import annotations

from reflection import migrations
from reflection.cli.common import JsonOpt, emit_json, handled, out, safe_url, services


@handled
def migrate(json_: JsonOpt = False) -> None:
    """Create or upgrade the worker's tables in REFLECTION_DATABASE_URL.

    Runs the alembic migrations shipped in the package (what `alembic upgrade head` does
    from a checkout); safe to run again. Run it once per deployment, before the workers
    start (docker compose's `migrate` service, a Kubernetes Job)."""
    with services() as svc:
        url = svc.settings.database_url
        before = migrations.current_revision(svc.engine)
        migrations.upgrade(url)
        after = migrations.current_revision(svc.engine)
    where = safe_url(url)
    if json_:
        emit_json({"database": where, "from": before, "to": after})
    elif before == after:
        out.print(f"{where}: already at {after}", markup=False, soft_wrap=True)
    else:
        out.print(
            f"{where}: migrated from {before or 'nothing'} to {after}", markup=False, soft_wrap=True
        )

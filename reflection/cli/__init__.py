"""The operator's command line: `reflection doctor|run|enqueue|backfill|history|show|revert|
stats|proposals|approve|reject|protect|unprotect` (typer + rich; `--json` on read commands).
"""

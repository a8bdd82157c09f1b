"""Names and limits shared across the pipeline, in one place."""

from __future__ import annotations

import re
from typing import Final, get_args

from reflection.models import JobOutcome, MemoryType

TASK_NAME: Final = "reflect"
QUEUE_NAME: Final = "reflection"
# The only tasks the worker's app has (issue 22): Celery's built-ins, the tasks named
# with this prefix (`celery.backend_cleanup`, `celery.chord_unlock`, `celery.map`, ...),
# are unregistered, so a message naming one is refused ("Received unregistered task")
# and dropped, never run.
QUEUE_TASKS: Final = frozenset({TASK_NAME, "consolidate"})
CELERY_BUILTIN_PREFIX: Final = "celery."

# A memory entry name, a user id and a piece name are all path components; this is the
# single guard that keeps them inside the user's folder.
SLUG_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Entry names refused although they are slugs: `memory` is the index `MEMORY.md` on a
# case-insensitive file system (compared case-folded).
RESERVED_ENTRY_NAMES: Final = frozenset({"memory"})
# User ids come from the platform and may use upper case; still one safe path component.
USER_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Job ids: the platform's primary keys (uuids, ulids, integers as text).
JOB_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

MEMORY_TYPES: Final[tuple[str, ...]] = get_args(MemoryType)
OUTCOMES: Final[tuple[str, ...]] = get_args(JobOutcome)  # a finished job's status
PERMISSION_MODES: Final = ("readonly", "edit", "full")
PIECE_TERMINALS: Final = ("COMPLETE", "ABORT")

# Redis keys (lock database). python-redis-lock prefixes its keys with "lock:".
USER_LOCK_PREFIX: Final = "reflection:user:"
USER_SLOTS_PREFIX: Final = "reflection:inflight:"
USER_DEFERRED_PREFIX: Final = "reflection:deferred:"
# How long runs hold their slot (a moving average): the fleet's, and per user after ":".
RUN_SECONDS_KEY: Final = "reflection:run-seconds"
# The LLM circuit breaker (reflection.breaker): open since (epoch seconds); the probe in
# flight (a run id, or "wait" after a failed probe); when a run first met the outage
# (after ":", its reflection job id).
LLM_BREAKER_KEY: Final = "reflection:llm-breaker"
LLM_PROBE_KEY: Final = "reflection:llm-breaker:probe"
LLM_OUTAGE_SINCE_PREFIX: Final = "reflection:llm-outage:"
# Coalescing (reflection.burst): the jobs of a user and piece waiting to be reflected,
# after the prefix `<user_id>:<piece_name>` (a sorted set of job ids by arrival, and
# `...:tasks`, a hash of job id -> the job's reflect task).
BURST_PREFIX: Final = "reflection:burst:"

# Folder layout under <user_folder_root>/<uid>/.
MEMORY_DIR: Final = "memory"
MEMORY_INDEX: Final = "MEMORY.md"
PIECES_DIR: Final = "pieces"
JOBS_DIR: Final = "jobs"
ACTIVITY_LOG: Final = "activity.log"
REFLECTIONS_DIR: Final = "reflections"
SNAPSHOT_INDEX: Final = "index.jsonl"
JOURNAL_DIR: Final = ".journal"

# Input bounds: reading anything larger than these is refused, not attempted.
MAX_PIECE_BYTES: Final = 256 * 1024
MAX_MEMORY_FILE_BYTES: Final = 256 * 1024
MAX_LLM_REPLY_CHARS: Final = 512 * 1024
MAX_DESCRIPTION_BYTES: Final = 1024  # a memory entry's one-line description
MAX_ID_IN_METRICS: Final = 128
# A repair round repeats at most this much (characters, and as many UTF-8 bytes) of a
# broken answer; the prompt guard keeps room for it.
REPAIR_ECHO_MAX: Final = 1000

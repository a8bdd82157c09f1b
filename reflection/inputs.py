"""Load what a reflection reads: the job row, its activity log, memory and the piece."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine

from reflection import storage
from reflection.activity import read_activity_log
from reflection.errors import (
    InputError,
    InputMismatchError,
    JobNotFoundError,
    PieceNotFoundError,
    UnsafePathError,
)
from reflection.memory import load_memory
from reflection.models import Job, Piece, ReflectionInputs, ReflectRequest
from reflection.paths import UserPaths, builtin_piece
from reflection.pieces import PieceError, load_piece_file

log = logging.getLogger(__name__)


def load_piece(paths: UserPaths, pieces_dir: Path, piece_name: str) -> Piece:
    """The user's copy of the piece if present, else the built-in one."""
    user_copy = paths.piece_copy(piece_name)
    for path, is_user in ((user_copy, True), (builtin_piece(pieces_dir, piece_name), False)):
        try:
            if is_user:
                paths.writable(path)  # neither the copy nor its folder may be a link
            text = load_piece_file(path, root=paths.home if is_user else None)
        except UnsafePathError as e:
            log.warning("user piece copy ignored: %s", e)
            continue
        except FileNotFoundError:
            continue
        except PieceError as e:
            raise InputError(f"piece {piece_name!r} at {path} is unreadable: {e}") from e
        return Piece(name=piece_name, yaml=text, user_copy=is_user, path=path)
    raise PieceNotFoundError(f"piece {piece_name!r} exists neither for the user nor built in")


def load_inputs(
    *,
    request: ReflectRequest,
    engine: Engine,
    paths: UserPaths,
    pieces_dir: Path,
    activity_log_max_bytes: int,
) -> ReflectionInputs:
    """Everything the prompt needs; permanent errors for a missing or mismatched job."""
    job = storage.fetch_job(engine=engine, job_id=request.original_job_id)
    if job is None:
        raise JobNotFoundError(f"job {request.original_job_id} is not in the jobs table")
    if job.user_id != request.user_id or job.piece_name != request.piece_name:
        raise InputMismatchError(
            f"job {job.id} belongs to user {job.user_id!r} / piece {job.piece_name!r}, "
            f"the task says {request.user_id!r} / {request.piece_name!r}"
        )
    return assemble_inputs(
        request=request,
        job=job,
        paths=paths,
        pieces_dir=pieces_dir,
        activity_log_max_bytes=activity_log_max_bytes,
    )


def assemble_inputs(
    *,
    request: ReflectRequest,
    job: Job,
    paths: UserPaths,
    pieces_dir: Path,
    activity_log_max_bytes: int,
) -> ReflectionInputs:
    """The job's files (piece, memory, activity log) read beside the job row; the
    evaluation suite calls this with a scenario's job instead of a `jobs` row."""
    piece = load_piece(paths, pieces_dir, request.piece_name)
    memory, malformed = load_memory(paths)
    for m in malformed:
        log.warning(
            "user %s: malformed memory file %s skipped: %s", request.user_id, m.path, m.reason
        )
    activity = read_activity_log(
        paths.activity_log(job.id), activity_log_max_bytes, root=paths.home
    )
    return ReflectionInputs(
        request=request, job=job, activity=activity, memory=memory, malformed=malformed, piece=piece
    )

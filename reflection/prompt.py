"""The prompts, and the guard that keeps them inside the model's context (SPEC section 8).

The prompt text lives in `reflection/prompts/*.md` (string.Template files: data put into
`$placeholders` is never re-scanned, so braces and dollars in logs are harmless). The
user prompt carries the job's data in blocks that open with `<<<NAME` and close with
`>>>`; any run of three or more `<` or `>` inside data is broken up so data can never
close its block or open a fake one. Credentials in the data are masked before anything
reaches the model.

`fit_prompt` counts tokens without a tokenizer (the model's is unknown): a prompt whose
UTF-8 bytes fit the budget fits, since no tokenizer spends more than a token per byte;
a larger one is estimated (`estimate_tokens`). When the prompt is over budget, it first
shrinks the activity log (down to nothing), then cuts memory bodies, longest first (down
to a short stub); if that is still too much it raises ContextOverflowError before any
call is made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from string import Template
from typing import Final

from reflection import constants as c
from reflection.activity import shrink_activity
from reflection.errors import ContextOverflowError
from reflection.evidence import ShownJob
from reflection.models import ActivityLog, Job, MemoryEntry, ReflectionInputs
from reflection.reply import decision_json_schema
from reflection.secrets import mask_secrets

# Chat framing (roles, separators) on top of the two messages, in tokens.
FRAMING_TOKENS: Final = 64
# A repair round (llm.py) sends the prompt again with the broken answer's head (a token
# a byte at most) and its request: room for it is kept, whatever the first answer was.
REPAIR_TOKENS: Final = c.REPAIR_ECHO_MAX + 200
# A memory body is never cut below this many bytes (marker included).
BODY_STUB_BYTES: Final = 240
BODY_TRIM_MARK: Final = "the rest was trimmed to fit the context"
# The job's result and error are summaries; a longer one is cut in the middle.
JOB_FIELD_MAX_BYTES: Final = 4096

_DELIMITER_RUN: Final = re.compile(r"<{3,}|>{3,}")
_NOT_WORD: Final = re.compile(r"[^A-Za-z0-9_-]")


@cache
def _template(name: str) -> Template:
    text = resources.files("reflection").joinpath("prompts", name).read_text(encoding="utf-8")
    return Template(text)


# The pieces a BPE tokenizer rarely merges across: runs without spaces (base64, hashes,
# ids), words (split at case changes), 1-3 digits, punctuation, other scripts, line
# breaks, runs of blanks, and a space before digits.
_PIECES: Final = re.compile(
    r"[A-Za-z0-9+/=_-]{20,}|[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]{1,3}"
    r"|[^\sA-Za-z0-9\x80-\U0010ffff]+|[\x80-\U0010ffff]+|\n+|[ \t]{2,}| (?=[0-9])"
)


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens `text` costs, without a tokenizer.

    Measured against tiktoken's cl100k on English, French, German and Indonesian prose,
    code, YAML, logs of hashes, UUIDs and pod ids, base64, JSON lines, digits, CJK,
    Cyrillic and emoji, it gave 1.0 to 2.9 times the real count (random printable ASCII
    and letter soup: 0.92 to 0.96); bytes / 3 gave 0.4 to 1.5. About 3 ms per 20 KB, so
    the guard asks for it only when the bytes alone do not fit.

    Counted line by line (no piece spans a line break, so the sum is never below the
    whole's count), short lines from a cache: the guard's trimming rounds re-count a
    prompt that changed only where it was cut."""
    return sum(
        _line_tokens(line) if len(line) <= _CACHED_LINE else _piece_tokens(line)
        for line in text.splitlines(keepends=True)
    )


_CACHED_LINE: Final = 512  # characters; longer lines are counted afresh (and not kept)


@lru_cache(maxsize=4096)
def _line_tokens(line: str) -> int:
    return _piece_tokens(line)


def _piece_tokens(text: str) -> int:
    tokens = 0
    for m in _PIECES.finditer(text):
        piece = m.group()
        first, size = piece[0], len(piece)
        if first > "\x7f":  # another script or emoji: up to a token per UTF-8 byte
            tokens += len(piece.encode("utf-8", errors="surrogatepass"))
        elif size >= 20 and not first.isspace():  # random-looking: 1.3 characters a token
            tokens += (size * 3 + 3) // 4
        elif size > 4 and first.isalpha():  # a rare or foreign word: two letters a token
            tokens += (size + 1) // 2
        elif size > 1 and not first.isspace() and not first.isalnum():
            tokens += (size * 2 + 2) // 3
        else:
            tokens += 1
    return tokens


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


@cache
def _system_tokens(system: str) -> int:
    return estimate_tokens(system)  # the same few texts, run after run


@cache
def reserved_tokens() -> int:
    """Tokens the request spends besides the two messages: the response_format schema
    (sent in the best output mode), the chat framing and a repair round's additions."""
    return estimate_tokens(json.dumps(decision_json_schema())) + FRAMING_TOKENS + REPAIR_TOKENS


def build_system_prompt(*, max_changes: int, max_body_bytes: int) -> str:
    """The system prompt: the task, the memory types, when to abstain, the limits, the
    security rule about data, and the exact JSON answer shape."""
    return _template("system.md").substitute(
        max_changes=max_changes, max_body_bytes=max_body_bytes, name_pattern=c.SLUG_RE.pattern
    )


def _neutral(text: str) -> str:
    """`text` with every run of 3+ `<` or `>` spaced out, so it cannot delimit a block."""
    return _DELIMITER_RUN.sub(lambda m: " ".join(m.group()), text)


def _block(name: str, body: str, attrs: str = "") -> str:
    header = f"<<<{name} {attrs}".rstrip()
    return f"{header}\n{_neutral(body).rstrip(chr(10))}\n>>>"


def _clip_bytes(text: str, max_bytes: int, *, from_end: bool = False) -> str:
    raw = text.encode("utf-8")
    cut = raw[-max_bytes:] if from_end else raw[:max_bytes]
    return cut.decode("utf-8", errors="ignore") if max_bytes > 0 else ""


def _clip_middle(text: str, max_bytes: int) -> str:
    """`text` cut in the middle to about `max_bytes` UTF-8 bytes, with a marker."""
    size = len(text.encode("utf-8"))
    if size <= max_bytes:
        return text
    half = max_bytes // 2
    head, tail = _clip_bytes(text, half), _clip_bytes(text, half, from_end=True)
    omitted = size - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    return f"{head}\n[... {omitted} bytes omitted ...]\n{tail}"


def _trim_body(body: str, cap: int) -> str:
    """`body` cut to at most `cap` bytes (at least a stub), ending in a marker."""
    size = len(body.encode("utf-8"))
    if size <= cap:
        return body
    marker = f"\n[... {size} bytes in all; {BODY_TRIM_MARK} ...]"
    return _clip_bytes(body, max(cap - len(marker.encode("utf-8")), 0)) + marker


def _duration(job: Job) -> str:
    if job.created_at is None or job.finished_at is None:
        return ""
    seconds = max(0, int((job.finished_at - job.created_at).total_seconds()))
    return f"\nduration: {seconds // 60}m {seconds % 60}s"


def _activity_note(activity: ActivityLog, text: str) -> str:
    if not activity.found:
        return "no activity log was found for this job"
    if not text and activity.total_bytes:
        return f"{activity.total_bytes} bytes, all left out to fit the context"
    if not text:
        return "empty"
    if len(text.encode("utf-8")) < activity.total_bytes:
        return (
            f"{activity.total_bytes} bytes, cut in the middle (a marker says how much is left out)"
        )
    return f"{activity.total_bytes} bytes, shown whole"


def _memory_blocks(memory: Sequence[MemoryEntry]) -> list[str]:
    return [
        _block(
            "MEMORY_ENTRY",
            f"description: {e.description}\n\n{e.body}",
            f"name={e.name} type={e.type}" + (" protected=true" if e.protected else ""),
        )
        for e in memory
    ]


@dataclass(frozen=True)
class IndexView:
    """How much of the memory index the prompt lists: every entry with its description
    (the default), only names and types (`names_only`), and at most `listed` entries
    (None: all), the first by name; the rest are counted on a closing line."""

    names_only: bool = False
    listed: int | None = None


def _index_line(e: MemoryEntry, names_only: bool) -> str:
    size = len(e.body.encode("utf-8", errors="surrogatepass"))
    flags = f"{e.type}, protected" if e.protected else e.type
    if names_only:
        return f"- {e.name} ({flags})"
    return f"- {e.name} ({flags}, {size} bytes): {e.description}"


def _index_block(memory: Sequence[MemoryEntry], view: IndexView) -> str:
    """Every entry's name, type, body size and description, by name: what the model may
    update, merge or remove even when its body is not shown."""
    entries = sorted(memory, key=lambda e: e.name)
    shown = entries if view.listed is None else entries[: view.listed]
    lines = [_index_line(e, view.names_only) for e in shown]
    if len(shown) < len(entries):
        lines.append(
            f"[... {len(entries) - len(shown)} more entries not listed, to fit the context ...]"
        )
    return _block("MEMORY_INDEX", "\n".join(lines), f"entries={len(entries)}")


_WORD: Final = re.compile(r"[a-z0-9][a-z0-9_-]{3,}")


def _words(*texts: str | None) -> set[str]:
    return {w for t in texts if t for w in _WORD.findall(t.lower())}


@dataclass(frozen=True)
class MemoryShown:
    """Which memory bodies a prompt shows: `stable` ones before the job, by name (the same
    for every job of the user while memory is unchanged: the cached prefix), `relevant`
    ones after it, most related to the job first. Every entry is in the index."""

    stable: tuple[MemoryEntry, ...]
    relevant: tuple[MemoryEntry, ...] = ()

    @property
    def count(self) -> int:
        return len(self.stable) + len(self.relevant)


def budget_memory(
    memory: Sequence[MemoryEntry], max_bytes: int, job: Job, activity_text: str
) -> MemoryShown:
    """The bodies to show within `max_bytes` in all (0: no limit; all of them, by name).

    Over the limit, half of it goes to bodies taken in name order (each that still fits),
    which do not depend on the job, so the prompt's prefix stays the same from one job to
    the next; the rest to the bodies that share the most words with the job, shown after
    it (a body that shares none is not related). The others are only listed in the index
    (an agent may still remove or merge them, or update one by writing its whole body)."""
    by_name = sorted(memory, key=lambda e: e.name)
    sizes = {e.name: len(e.body.encode("utf-8", errors="surrogatepass")) for e in by_name}
    if max_bytes <= 0 or sum(sizes.values()) <= max_bytes:
        return MemoryShown(stable=tuple(by_name))
    stable = _fill(by_name, sizes, max_bytes // 2)
    taken = {e.name for e in stable}
    context = _words(job.task, job.result, job.error, activity_text)
    shared = {
        e.name: len(_words(e.name, e.description, e.body) & context)
        for e in by_name
        if e.name not in taken
    }
    ranked = sorted((e for e in by_name if shared.get(e.name)), key=lambda e: -shared[e.name])
    room = max_bytes - sum(sizes[e.name] for e in stable)
    return MemoryShown(stable=stable, relevant=_fill(ranked, sizes, room))


def _fill(
    entries: Sequence[MemoryEntry], sizes: Mapping[str, int], room: int
) -> tuple[MemoryEntry, ...]:
    """The entries, in order, whose bodies still fit in `room` bytes (each that fits)."""
    out = []
    for e in entries:
        if sizes[e.name] <= room:
            out.append(e)
            room -= sizes[e.name]
    return tuple(out)


def build_user_prompt(
    inputs: ReflectionInputs,
    *,
    activity_text: str,
    memory: Sequence[MemoryEntry] | MemoryShown,
    index: IndexView = IndexView(),
    others: Sequence[str] = (),
) -> str:
    """The user prompt, from what changes least to what changes most (SPEC §12): the
    piece, the memory index and the stable bodies (the prefix two jobs of one user share
    byte for byte while memory and piece are unchanged), then the job, then the bodies
    picked for it. `memory` as a plain sequence shows those bodies, all before the job.
    `others`: the parts of a batch's other jobs, after this one's (`reflection.batch_prompt`).

    Renders the data as given (`fit_prompt` masks credentials and trims before calling it).
    """
    shown = memory if isinstance(memory, MemoryShown) else MemoryShown(stable=tuple(memory))
    return render_user_prompt(
        prompt_prefix(inputs, shown.stable, index),
        [job_part(inputs, activity_text), *others],
        shown.relevant,
    )


def shown_job(job: Job, activity_text: str) -> ShownJob:
    """The job's text exactly as its blocks show it (evidence quotes are judged against
    it, SPEC §14): request, result and error as cut, the log with its cut marker."""

    def shown(text: str) -> str:
        return _neutral(text).rstrip("\n")

    return ShownJob.from_prompt(
        request=shown(job.task),
        result=shown(_clip_middle(job.result, JOB_FIELD_MAX_BYTES)) if job.result else None,
        error=shown(_clip_middle(job.error, JOB_FIELD_MAX_BYTES)) if job.error else None,
        log_text=shown(activity_text),
    )


@dataclass(frozen=True)
class PromptPrefix:
    """The job-independent head of the user prompt."""

    piece_name: str
    piece_source: str
    piece_block: str
    memory_note: str
    memory_blocks: str  # memory index, stable bodies, malformed memory files


def prompt_prefix(
    inputs: ReflectionInputs, stable: Sequence[MemoryEntry], index: IndexView = IndexView()
) -> PromptPrefix:
    """The prefix of `inputs`' prompt, showing the `stable` bodies."""
    piece = inputs.piece
    origin = "user-copy" if piece.user_copy else "built-in"
    blocks = []
    if inputs.memory:
        blocks.append(_index_block(inputs.memory, index))
    blocks += _memory_blocks(stable)
    if inputs.malformed:
        listing = "\n".join(f"- {m.path}: {m.reason}" for m in inputs.malformed)
        blocks.append(_block("MALFORMED_MEMORY_FILES", listing))
    n = len(inputs.memory)
    note = f"{n} entr{'y' if n == 1 else 'ies'}" if n else "no entries yet"
    if inputs.malformed:
        note += f"; {len(inputs.malformed)} malformed file(s) skipped"
    return PromptPrefix(
        piece_name=piece.name,
        piece_source="the user's copy"
        if piece.user_copy
        else "built-in; an edit creates the user's copy",
        piece_block=_block("PIECE", piece.yaml, f"name={piece.name} source={origin}"),
        memory_note=note,
        memory_blocks="\n\n".join(blocks),
    )


def job_part(inputs: ReflectionInputs, activity_text: str) -> str:
    """One job's part of the prompt: its facts, then its data in delimited blocks (a
    batch of one user's jobs gives each its own part)."""
    job = inputs.job
    blocks = [_block("REQUEST", job.task)]
    if job.result:
        blocks.append(_block("RESULT", _clip_middle(job.result, JOB_FIELD_MAX_BYTES)))
    if job.error:
        blocks.append(_block("ERROR", _clip_middle(job.error, JOB_FIELD_MAX_BYTES)))
    if activity_text:
        attrs = f"total_bytes={inputs.activity.total_bytes}"
        blocks.append(_block("ACTIVITY_LOG", activity_text, attrs))
    return _template("job.md").substitute(
        job_id=job.id,
        outcome=inputs.request.outcome,
        status=_NOT_WORD.sub("?", job.status[:40]),
        duration=_duration(job),
        activity_note=_activity_note(inputs.activity, activity_text),
        blocks="\n\n".join(blocks),
    )


def render_user_prompt(
    prefix: PromptPrefix, jobs: Sequence[str], relevant: Sequence[MemoryEntry]
) -> str:
    """The user prompt from its prefix (`prompt_prefix`), the jobs' parts (`job_part`) and
    the bodies picked for them."""
    after = "\n\n".join(jobs)
    if relevant:
        after += "\n\n# Memory entries related to the job\n\n" + "\n\n".join(
            _memory_blocks(relevant)
        )
    return _template("user.md").substitute(
        piece_name=prefix.piece_name,
        piece_source=prefix.piece_source,
        piece_block=prefix.piece_block,
        memory_note=prefix.memory_note,
        memory_blocks=prefix.memory_blocks,
        jobs=after,
    )


@dataclass(frozen=True)
class Prompt:
    """The two messages that fit, and what the guard had to cut to make them fit."""

    system: str
    user: str
    est_tokens: int  # the guard's count: the UTF-8 bytes when they fit, else the estimate
    log_bytes_in_prompt: int
    memory_bodies_trimmed: int
    memory_bodies_omitted: int = 0  # entries only listed in the index, their body not shown
    memory_index_listed: int = 0  # entries the index lists (all, unless it had to be cut)
    # The job's masked text as shown, for judging evidence quotes (`shown_job`).
    shown: ShownJob | None = None


def _masked(inputs: ReflectionInputs, log_max_bytes: int) -> ReflectionInputs:
    """`inputs` with credentials masked everywhere, the piece YAML included (an edit of a
    piece that holds a credential is refused, so the masked copy never replaces it)."""
    job = inputs.job
    return inputs.model_copy(
        update={
            "piece": inputs.piece.model_copy(update={"yaml": mask_secrets(inputs.piece.yaml)}),
            "job": job.model_copy(
                update={
                    "task": mask_secrets(job.task),
                    "result": mask_secrets(job.result) if job.result else job.result,
                    "error": mask_secrets(job.error) if job.error else job.error,
                }
            ),
            # A mask can be longer than its secret: past the limit, the log is cut again
            # (to the size it had, which the limit allowed).
            "activity": shrink_activity(
                inputs.activity.model_copy(update={"text": mask_secrets(inputs.activity.text)}),
                max(log_max_bytes, _utf8_size(inputs.activity.text)),
            ),
            # Bodies are masked once chosen (`_masked_bodies`): a memory of thousands of
            # entries shows a few; the index shows only their sizes.
            "memory": tuple(
                e.model_copy(update={"description": d})
                for e, d in zip(
                    inputs.memory, _mask_lines([e.description for e in inputs.memory]), strict=True
                )
            ),
            "malformed": tuple(
                m.model_copy(update={"reason": mask_secrets(m.reason)}) for m in inputs.malformed
            ),
        }
    )


def _mask_lines(lines: list[str]) -> list[str]:
    """`mask_secrets` of each one-line text, in one call (a call's fixed cost, times
    thousands of descriptions, was most of a large memory's prompt); each on its own if
    a mask took a line break (a key across two lines)."""
    if not lines or any("\n" in line for line in lines):
        return [mask_secrets(line) for line in lines]
    masked = mask_secrets("\n".join(lines)).split("\n")
    return masked if len(masked) == len(lines) else [mask_secrets(line) for line in lines]


def _masked_bodies(shown: MemoryShown) -> MemoryShown:
    def mask(entries: tuple[MemoryEntry, ...]) -> tuple[MemoryEntry, ...]:
        return tuple(e.model_copy(update={"body": mask_secrets(e.body)}) for e in entries)

    return MemoryShown(stable=mask(shown.stable), relevant=mask(shown.relevant))


def _cap_for(sizes: Sequence[int], need: int) -> int:
    """The largest cap C such that cutting every size above C to C saves `need` bytes
    (0 when even that cannot)."""
    lo, hi = 0, max(sizes, default=0)
    if sum(sizes) < need:
        return 0
    while lo < hi:  # the answer is in [lo, hi]
        mid = (lo + hi + 1) // 2
        if sum(max(0, s - mid) for s in sizes) >= need:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class _Guard:
    """The state of one fit: the data as it stands, and how far it is over budget."""

    inputs: ReflectionInputs
    system: str
    budget: int
    log: ActivityLog
    shown: MemoryShown
    index: IndexView = IndexView()
    others: tuple[str, ...] = ()  # a batch's other jobs' parts, kept whole
    user: str = ""
    tokens: int = 0

    def render(self) -> int:
        """Rebuild the user prompt; the bytes still to cut (≤ 0 once it fits)."""
        self.user = build_user_prompt(
            self.inputs,
            activity_text=self.log.text,
            memory=self.shown,
            index=self.index,
            others=self.others,
        )
        size = _utf8_size(self.system) + _utf8_size(self.user)
        if size <= self.budget:  # a token is at least a byte: it fits whatever the tokenizer
            self.tokens = size
            return size - self.budget
        self.tokens = _system_tokens(self.system) + estimate_tokens(self.user)
        if self.tokens <= self.budget:
            return self.tokens - self.budget
        return -(-(self.tokens - self.budget) * size // self.tokens)  # at this text's density

    def trim_log(self, over: int) -> int:
        while over > 0 and self.log.text:
            size = len(self.log.text.encode("utf-8"))
            self.log = shrink_activity(self.log, max(0, min(size - 1, size - over)))
            over = self.render()
        return over

    def trim_memory(self, over: int) -> int:
        """Cut the shown bodies, longest first, down to a stub."""
        stable, relevant = self.shown.stable, self.shown.relevant
        originals = [e.body for e in (*stable, *relevant)]
        sizes = [len(b.encode("utf-8")) for b in originals]
        cap = max(sizes, default=0)
        while over > 0 and cap > BODY_STUB_BYTES:
            current = [
                len(e.body.encode("utf-8")) for e in (*self.shown.stable, *self.shown.relevant)
            ]
            cap = max(BODY_STUB_BYTES, min(cap - 1, _cap_for(current, over)))
            cut = [
                e.model_copy(update={"body": _trim_body(body, cap)})
                for e, body in zip((*stable, *relevant), originals, strict=True)
            ]
            self.shown = MemoryShown(
                stable=tuple(cut[: len(stable)]), relevant=tuple(cut[len(stable) :])
            )
            over = self.render()
        return over

    def _largest_fitting(self, n: int, apply: Callable[[int], None]) -> int:
        """The largest k ≤ n for which `apply(k)` then a render fits (0 if none); leaves
        that k applied and rendered. Binary search: a memory of thousands of entries."""
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            apply(mid)
            if self.render() <= 0:
                lo = mid
            else:
                hi = mid - 1
        apply(lo)
        return self.render()

    def drop_bodies(self, over: int, relevant_too: bool = False) -> int:
        """Show fewer bodies: the stable ones from the last by name; with `relevant_too`,
        then the least related ones after the job. The index still lists them all."""
        stable, relevant = self.shown.stable, self.shown.relevant
        if over <= 0 or not (stable or (relevant and relevant_too)):
            return over

        def keep(k: int) -> None:
            if relevant_too:
                self.shown = MemoryShown(
                    stable=stable[:k], relevant=relevant[: max(0, k - len(stable))]
                )
            else:
                self.shown = MemoryShown(stable=stable[:k], relevant=relevant)

        return self._largest_fitting(len(stable) + (len(relevant) if relevant_too else 0), keep)

    def names_only(self, over: int) -> int:
        """List names and types only in the index."""
        if over <= 0 or not self.inputs.memory:
            return over
        self.index = IndexView(names_only=True)
        return self.render()

    def cut_index(self, over: int) -> int:
        """List as many entries as fit, the first by name; the rest are counted."""
        if over <= 0 or not self.inputs.memory:
            return over

        def listed(k: int) -> None:
            self.index = IndexView(names_only=True, listed=k)

        return self._largest_fitting(len(self.inputs.memory), listed)

    @property
    def bodies_trimmed(self) -> int:
        return sum(BODY_TRIM_MARK in e.body for e in (*self.shown.stable, *self.shown.relevant))


def fit_prompt(
    inputs: ReflectionInputs,
    *,
    context_limit_tokens: int,
    max_output_tokens: int,
    max_changes: int,
    max_body_bytes: int,
    memory_max_bytes: int = 0,
    log_max_bytes: int = 0,
    others: Sequence[str] = (),
) -> Prompt:
    """The system and user prompts, cut to fit `context_limit_tokens` minus the output and a
    reserve: the activity log first (down to nothing), then memory bodies, longest first
    (down to a stub), then fewer bodies, then a shorter memory index (names only, then
    the first entries by name): a large memory never makes the prompt overflow. Raises
    ContextOverflowError when even that is too much (the job or piece alone is).

    Before that, memory bodies are held to `memory_max_bytes` in all (`budget_memory`),
    and the activity log, its credentials masked, to `log_max_bytes`
    (`activity_log_max_bytes`; 0: to the size it had).

    `others`: a batch's other jobs' parts, shown whole after this job's (each was masked
    and cut to its share of the log budget by `reflection.batch_prompt`).
    """
    safe = _masked(inputs, log_max_bytes)
    guard = _Guard(
        inputs=safe,
        system=build_system_prompt(max_changes=max_changes, max_body_bytes=max_body_bytes),
        budget=context_limit_tokens - max_output_tokens - reserved_tokens(),
        log=safe.activity,
        shown=_masked_bodies(
            budget_memory(safe.memory, memory_max_bytes, safe.job, safe.activity.text)
        ),
        others=tuple(others),
    )
    over = guard.trim_memory(guard.trim_log(guard.render()))
    # Then the index's descriptions, the stable bodies, the index's last names, and only
    # then the bodies related to the job.
    over = guard.cut_index(guard.drop_bodies(guard.names_only(over)))
    over = guard.drop_bodies(over, relevant_too=True)
    if over > 0:
        raise ContextOverflowError(
            f"the prompt needs about {guard.tokens} tokens but {max(guard.budget, 0)} fit "
            f"(context {context_limit_tokens} - output {max_output_tokens} - reserve "
            f"{reserved_tokens()}), even with the activity log left out, memory bodies cut "
            f"to {BODY_STUB_BYTES} bytes then left out, and the memory index cut"
        )
    return Prompt(
        system=guard.system,
        user=guard.user,
        est_tokens=guard.tokens,
        log_bytes_in_prompt=len(guard.log.text.encode("utf-8")),
        memory_bodies_trimmed=guard.bodies_trimmed,
        memory_bodies_omitted=len(safe.memory) - guard.shown.count,
        memory_index_listed=len(safe.memory) if guard.index.listed is None else guard.index.listed,
        shown=shown_job(safe.job, guard.log.text),
    )

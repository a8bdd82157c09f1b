"""Evidence and trust (SPEC §11, §14): is a change backed by the job, and by whom?

Pure: no I/O. The model quotes 1-3 verbatim passages of the job data it was shown; a
quote is judged against exactly that text (`ShownJob`: masked, trimmed, as rendered), which
is stored on the claim next to the decision so that a retry judges the same way.

Matching. A quote and the text are compared after collapsing whitespace and ignoring case
(`str.casefold`). The quote must lie inside one source (request, result, error, or one
side of the activity log's cut: a quote across the cut marker never matches). It has at
least `MIN_QUOTE_CHARS` characters (once normalised), or it is a whole line; a log line's
leading `[...]` stamp may be left out of a whole-line quote. Surrounding whitespace, an
ellipsis at either end and one pair of wrapping quotation marks are not part of a quote.
The shown text is already masked, so a quote that holds a raw credential does not match
and one that holds the mask (`[REDACTED:...]`) does.

Trust is per whole line; a quote is trusted when every line it touches is trusted:

- the request: every line (the user wrote it);
- the activity log: a line that matches the trusted-line pattern (default
  `DEFAULT_TRUSTED_LINE_PATTERN`, a line like `[00:00:31] user: ...`). The pattern is only
  believed in a log whose lines carry stamps: a log without a single line that starts with
  a `[...]` stamp has no structure that tells the user's lines from tool output, so it
  trusts none of its lines and only the request counts. A line without a stamp inside a
  stamped log (an output's continuation line) is untrusted, even after a user line;
- the result and the error: never. They are the agent's summary and the tools' output,
  written by a model that may have read a hostile page.

Cost: a job's index (normalised sources, trusted spans, whole lines) is built once per
shown text and cached; judging a quote is a few `str.find` calls over the trusted spans
and the sources (linear in the text, no per-character Python loop) and a dict lookup.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

UNSUPPORTED: Final = "unsupported"
UNTRUSTED_SOURCE: Final = "untrusted_source"
EvidenceCode = Literal["unsupported", "untrusted_source"]

DEFAULT_TRUSTED_LINE_PATTERN: Final = r"^\[[^\]]*\]\s*user:"
MAX_QUOTES: Final = 3
MAX_QUOTE_CHARS: Final = 300
MIN_QUOTE_CHARS: Final = 20
MAX_CONFIRMED: Final = 5
# Entry types that tell agents how to work: only the user may give those.
INSTRUCTION_TYPES: Final = frozenset({"user", "feedback"})

# A line's leading stamp, as the platform writes it (`[00:00:31] ...`).
_STAMP: Final = re.compile(r"\[[^\]\n]*\]")
# The one marker activity.truncate_middle puts between the log's head and tail (a marker
# lookalike inside the log itself is defused there, so the first match is the real one).
_LOG_CUT: Final = re.compile(r"\n\[\.\.\. (\d+) bytes of the activity log omitted \.\.\.\]\n")
_QUOTE_MARKS: Final = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}
_ELLIPSIS: Final = ("...", "…")

Source = Literal["request", "result", "error", "log_head", "log_tail"]


class ShownJob(BaseModel):
    """The masked job text the model was shown, source by source, exactly as rendered.

    JSON-serialisable; stored on the claim beside the decision. Unknown fields are ignored
    and missing ones default, so a record written by another version still loads. A batch
    of jobs is a mapping job id -> ShownJob (`dump_shown` / `load_shown`).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    request: str
    result: str = ""
    error: str = ""
    log_head: str = ""  # the whole log when nothing was cut
    log_tail: str = ""
    log_omitted_bytes: int = 0  # > 0: the cut marker stood between head and tail

    @classmethod
    def from_prompt(
        cls,
        *,
        request: str,
        result: str | None = None,
        error: str | None = None,
        log_text: str = "",
    ) -> ShownJob:
        """The shown job from the texts as they went into the prompt; `log_text` is the
        activity log with its cut marker, which is split into head and tail here."""
        cut = _LOG_CUT.search(log_text)
        if cut is None:
            head, tail, omitted = log_text, "", 0
        else:
            head, tail = log_text[: cut.start()], log_text[cut.end() :]
            omitted = int(cut.group(1))
        return cls(
            request=request,
            result=result or "",
            error=error or "",
            log_head=head,
            log_tail=tail,
            log_omitted_bytes=omitted,
        )


_SHOWN_JOBS: Final = TypeAdapter(dict[str, ShownJob])


def dump_shown(jobs: Mapping[str, ShownJob]) -> dict[str, Any]:
    """A batch's shown texts (job id -> ShownJob) as plain JSON data, for the claim."""
    data: dict[str, Any] = _SHOWN_JOBS.dump_python(dict(jobs), mode="json")
    return data


def load_shown(data: Any) -> dict[str, ShownJob]:
    """The batch read back from `dump_shown`'s data; ValueError if it is not that."""
    try:
        return _SHOWN_JOBS.validate_python(data)
    except ValidationError as e:
        raise ValueError(f"not a mapping of job ids to shown job texts: {e}") from e


def shown_for(jobs: Mapping[str, ShownJob], job_id: str | None) -> ShownJob | None:
    """The text a change's quotes are judged against: its own job's. A change that names
    no job may only quote the batch's job when the batch has exactly one."""
    if job_id is None:
        return next(iter(jobs.values())) if len(jobs) == 1 else None
    return jobs.get(job_id)


def compile_trusted_pattern(pattern: str) -> re.Pattern[str]:
    """`REFLECTION_TRUSTED_LINE_PATTERN` compiled; ValueError names a bad regex."""
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"not a regular expression: {pattern!r}: {e}") from e


def normalize(text: str) -> str:
    """`text` as quotes are compared: whitespace runs collapsed to a space, case folded."""
    return " ".join(text.casefold().split())


def clean_quote(quote: str) -> str:
    """A quote without what is not part of it: surrounding whitespace, an ellipsis at
    either end, and one pair of quotation marks wrapped around the whole of it."""
    q = quote.strip()
    for mark in _ELLIPSIS:
        q = q.removeprefix(mark).removesuffix(mark).strip()
    if len(q) >= 2 and _QUOTE_MARKS.get(q[0]) == q[-1]:
        q = q[1:-1].strip()
    return q


# The index: each source normalised once, with its trusted spans and its whole lines.


@dataclass
class _Part:
    """One contiguous piece of shown text, normalised."""

    source: Source
    text: str = ""
    line_starts: list[int] = field(default_factory=list)  # normalised offset of each line
    line_numbers: list[int] = field(default_factory=list)  # its 1-based line in the source
    trusted_spans: list[tuple[int, int]] = field(default_factory=list)
    # A whole line's normalised text (also without its stamp) -> (trusted, line number).
    whole_lines: dict[str, tuple[bool, int]] = field(default_factory=dict)

    def line_at(self, offset: int) -> int:
        return self.line_numbers[max(0, bisect_right(self.line_starts, offset) - 1)]


def _stamp_tokens(line: str) -> int:
    """How many whitespace-separated tokens the line's leading `[...]` stamp takes (0:
    none, or a stamp glued to the text after it)."""
    m = _STAMP.match(line)
    if m is None or (m.end() < len(line) and not line[m.end()].isspace()):
        return 0
    return len(m.group().split())


def _add_whole_line(part: _Part, key: str, trusted: bool, number: int) -> None:
    seen = part.whole_lines.get(key)
    if seen is None or (trusted and not seen[0]):
        part.whole_lines[key] = (trusted, number)


def _index_part(source: Source, text: str, trusted: Callable[[str], bool]) -> _Part:
    """`text` normalised, with the spans of its runs of trusted lines and its whole lines."""
    part, chunks, pos = _Part(source), list[str](), 0
    run_start: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.casefold().split()
        if not tokens:
            continue  # a blank line touches nothing once whitespace is collapsed
        start = pos + 1 if chunks else 0
        joined = " ".join(tokens)
        ok = trusted(line)
        if ok and run_start is None:
            run_start = start
        elif not ok and run_start is not None:
            part.trusted_spans.append((run_start, pos))
            run_start = None
        pos = start + len(joined)
        chunks.append(joined)
        part.line_starts.append(start)
        part.line_numbers.append(number)
        _add_whole_line(part, joined, ok, number)
        stamp = _stamp_tokens(line)
        if 0 < stamp < len(tokens):
            _add_whole_line(part, " ".join(tokens[stamp:]), ok, number)
    if run_start is not None:
        part.trusted_spans.append((run_start, pos))
    part.text = " ".join(chunks)
    return part


def _never(line: str) -> bool:
    return False


def _always(line: str) -> bool:
    return True


def _log_trust(shown: ShownJob, pattern: re.Pattern[str]) -> Callable[[str], bool]:
    """Which log lines speak for the user: none in a log without stamped lines."""
    lines = (*shown.log_head.splitlines(), *shown.log_tail.splitlines())
    if not any(_STAMP.match(line) for line in lines):
        return _never
    return lambda line: pattern.search(line) is not None


@lru_cache(maxsize=64)
def _index(shown: ShownJob, pattern: re.Pattern[str]) -> tuple[_Part, ...]:
    log_trust = _log_trust(shown, pattern)
    return (
        _index_part("request", shown.request, _always),
        _index_part("result", shown.result, _never),
        _index_part("error", shown.error, _never),
        _index_part("log_head", shown.log_head, log_trust),
        _index_part("log_tail", shown.log_tail, log_trust),
    )


# Judging.


@dataclass(frozen=True)
class QuoteMatch:
    """How one quote fared: found (where, on which line) and trusted, or why not found."""

    found: bool
    trusted: bool = False
    source: Source | None = None
    line: int = 0  # 1-based, within `source`
    reason: str = ""  # why it was not found


def _find_long(parts: Sequence[_Part], q: str) -> QuoteMatch | None:
    """The quote inside a run of trusted lines if it is in one, else anywhere."""
    for part in parts:
        for start, end in part.trusted_spans:
            at = part.text.find(q, start, end)
            if at >= 0:
                return QuoteMatch(True, True, part.source, part.line_at(at))
    for part in parts:
        at = part.text.find(q)
        if at >= 0:
            return QuoteMatch(True, False, part.source, part.line_at(at))
    return None


def _find_line(parts: Sequence[_Part], q: str) -> QuoteMatch | None:
    """The quote as a whole line, a trusted one first."""
    hits = [(part, part.whole_lines[q]) for part in parts if q in part.whole_lines]
    hits.sort(key=lambda hit: not hit[1][0])  # stable: trusted first, then source order
    if not hits:
        return None
    part, (trusted, line) = hits[0]
    return QuoteMatch(True, trusted, part.source, line)


def _crosses_cut(shown: ShownJob, parts: Sequence[_Part], q: str) -> bool:
    if not shown.log_omitted_bytes:
        return False
    head, tail = parts[3].text, parts[4].text
    marker = normalize(f"[... {shown.log_omitted_bytes} bytes of the activity log omitted ...]")
    return q in f"{head} {tail}" or q in f"{head} {marker} {tail}"


def match_quote(
    quote: str,
    shown: ShownJob,
    pattern: re.Pattern[str] | str = DEFAULT_TRUSTED_LINE_PATTERN,
) -> QuoteMatch:
    """Judge one quote against the shown job: found or not (and why), and trusted or not.

    `pattern` is the trusted-line regex (`REFLECTION_TRUSTED_LINE_PATTERN`)."""
    if len(quote) > MAX_QUOTE_CHARS:
        return QuoteMatch(False, reason=f"longer than {MAX_QUOTE_CHARS} characters")
    q = normalize(clean_quote(quote))
    if not q:
        return QuoteMatch(False, reason="empty")
    parts = _index(shown, re.compile(pattern) if isinstance(pattern, str) else pattern)
    if len(q) >= MIN_QUOTE_CHARS:
        found = _find_long(parts, q)
    else:
        found = _find_line(parts, q)
        if found is None and _find_long(parts, q) is not None:
            return QuoteMatch(
                False, reason=f"shorter than {MIN_QUOTE_CHARS} characters and not a whole line"
            )
    if found is not None:
        return found
    if _crosses_cut(shown, parts, q):
        return QuoteMatch(False, reason="it crosses the activity log's cut")
    return QuoteMatch(False, reason="not found in the job's request, result, error or log")


def evidence_code(
    op: str,
    memory_type: str | None,
    evidence: Sequence[str] | None,
    shown: ShownJob | None,
    pattern: re.Pattern[str] | str = DEFAULT_TRUSTED_LINE_PATTERN,
) -> tuple[EvidenceCode | None, str]:
    """The evidence rules' verdict on one change: (`unsupported` | `untrusted_source` |
    None, detail).

    Only `add` and `update` need evidence. `unsupported`: no quote, more than
    `MAX_QUOTES`, no shown text for the change's job (`shown` None), or any quote not
    found (`match_quote`). `untrusted_source`: a `user` or `feedback` entry none of whose
    quotes is trusted. The detail never repeats a quote (it may hold what was masked)."""
    if op not in ("add", "update"):
        return None, ""
    if not evidence:
        return UNSUPPORTED, "no evidence: quote the job data that supports this change"
    if len(evidence) > MAX_QUOTES:
        return UNSUPPORTED, f"{len(evidence)} quotes; at most {MAX_QUOTES}"
    if shown is None:
        return UNSUPPORTED, "no job data shown for this change's job"
    matches = [match_quote(quote, shown, pattern) for quote in evidence]
    for n, m in enumerate(matches, start=1):
        if not m.found:
            return UNSUPPORTED, f"quote {n} of {len(matches)}: {m.reason}"
    if memory_type in INSTRUCTION_TYPES and not any(m.trusted for m in matches):
        sources = ", ".join(dict.fromkeys(str(m.source) for m in matches))
        return UNTRUSTED_SOURCE, (
            f"a {memory_type} entry must quote the user (the request or a user line of "
            f"the log); its quotes come from: {sources}"
        )
    return None, ""


def confirmed_names(
    confirmed: Iterable[str] | None, existing: Collection[str], *, limit: int = MAX_CONFIRMED
) -> tuple[str, ...]:
    """The entries a run confirms: the first `limit` distinct names that exist, in the
    decision's order; unknown names are ignored."""
    out: dict[str, None] = {}
    for name in confirmed or ():
        if len(out) >= limit:
            break
        if name in existing:
            out[name] = None
    return tuple(out)

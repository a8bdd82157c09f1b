"""Pieces: parse, validate and judge edits of the YAML workflows agents run (SPEC section 10).

Escalation rule. A reflection may change instructions, personas, rules, descriptions and
the order of movements; it may never widen what agents are allowed to do. Judged per
movement name, against the piece as it was before the edit:

- A movement whose name exists in the old piece keeps at most its old permissions:
  `edit` may not go from false to true (absent means false); `required_permission_mode`
  may not rise (readonly < edit < full; absent means readonly); `allowed_tools` may not
  gain a tool. An absent `allowed_tools` means "unrestricted": if the old movement had
  none, anything goes; if it had a list, the new one must have a list and it must be a
  subset (removing the list would lift every restriction).
- A movement whose name is new (added, or renamed, so that renaming cannot launder
  permissions) gets at most what the least privileged old movement has: `edit` only if
  every old movement had it, a mode no higher than the lowest old mode, and tools within
  the intersection of the old movements' tool lists (unrestricted old movements do not
  constrain that intersection; if every old movement is unrestricted, the new one may be).
- `max_movements` may not increase, and may not be removed if the old piece had one.
- Keys outside the known set (at the top level, in a movement, in a rule) make the piece
  invalid: an unknown key might be a permission this check cannot judge.

The YAML is read with `yaml.safe_load` semantics only, with limits: a size cap, a single
document, no anchors or aliases (no "billion laughs"), no explicit tags, bounded nesting,
no duplicate keys, and a mapping at the top.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from reflection import constants as c
from reflection.directives import gained
from reflection.fsio import open_regular, read_at_most
from reflection.models import Code
from reflection.paths import NotRegularFileError
from reflection.safeyaml import UnsafeYamlError, dump_canonical, load_strict
from reflection.text import escape_for_terminal, find_unsafe_chars


class PieceError(ValueError):
    """Raised when a piece is not valid YAML or not a valid piece."""


TOP_KEYS: Final = frozenset(
    {"name", "description", "max_movements", "initial_movement", "movements"}
)
MOVEMENT_KEYS: Final = frozenset(
    {"name", "persona", "instruction", "edit", "required_permission_mode", "allowed_tools", "rules"}
)
RULE_KEYS: Final = frozenset({"condition", "next"})
# Movement names are referenced by rules and shown to agents; keep them short and plain.
MOVEMENT_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_DEPTH: Final = 32
_MODE_RANK: Final = {mode: rank for rank, mode in enumerate(c.PERMISSION_MODES)}
_DEFAULT_MODE: Final = c.PERMISSION_MODES[0]


# --- parsing -------------------------------------------------------------------------


def parse_piece_yaml(text: str, *, max_bytes: int = c.MAX_PIECE_BYTES) -> dict[str, Any]:
    """Parse a piece's YAML with safe-load semantics and hard limits; the top-level mapping.

    Raises PieceError when the text is over `max_bytes` (UTF-8), holds more than one
    document, uses an anchor, alias or explicit tag, nests too deeply, repeats a key, is
    not YAML, or its top level is not a mapping.
    """
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise PieceError(f"piece text is not encodable as UTF-8: {e.reason}") from e
    if size > max_bytes:
        raise PieceError(f"piece is {size} bytes, over the limit of {max_bytes}")
    try:
        data = load_strict(text, max_depth=MAX_DEPTH)
    except UnsafeYamlError as e:
        raise PieceError(f"piece: {e}") from e
    if not isinstance(data, dict):
        raise PieceError(f"piece must be a YAML mapping, got {_kind(data)}")
    return data


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


# --- validation ----------------------------------------------------------------------


def validate_piece(data: Mapping[str, Any], *, expected_name: str) -> None:
    """Check a parsed piece against the format; raise PieceError with the first problem."""
    _validate_header(data, expected_name)
    movements = data.get("movements")
    if not isinstance(movements, list) or not movements:
        raise PieceError("movements must be a non-empty list")
    names = [_validate_movement(m, i) for i, m in enumerate(movements)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PieceError(f"movement names must be unique; repeated: {', '.join(dupes)}")
    initial = data.get("initial_movement")
    if initial is not None and initial not in names:
        raise PieceError(f"initial_movement {initial!r} is not a movement of this piece")
    _validate_targets(movements, set(names) | set(c.PIECE_TERMINALS))


def _validate_header(data: Mapping[str, Any], expected_name: str) -> None:
    """The piece's own keys: only known ones, its name, description and limit."""
    _closed_keys(data, TOP_KEYS, "piece")
    name = data.get("name")
    if name != expected_name:
        raise PieceError(f"name must be {expected_name!r} (the file stem), got {name!r}")
    _optional_str(data, "description", "piece")
    limit = data.get("max_movements")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise PieceError(f"max_movements must be a positive integer, got {limit!r}")


def _validate_targets(movements: list[Mapping[str, Any]], targets: set[str]) -> None:
    """Every rule leads to a movement of the piece or a terminal."""
    for i, movement in enumerate(movements):
        for j, rule in enumerate(movement.get("rules") or []):
            if rule["next"] not in targets:
                raise PieceError(
                    f"movements[{i}].rules[{j}].next {rule['next']!r} is not a movement "
                    f"name, {' or '.join(c.PIECE_TERMINALS)}"
                )


def _closed_keys(data: object, allowed: frozenset[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise PieceError(f"{where} must be a mapping, got {_kind(data)}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise PieceError(f"{where} has unknown keys: {', '.join(unknown)}")


def _optional_str(data: Mapping[str, Any], key: str, where: str) -> None:
    if key in data and not isinstance(data[key], str):
        raise PieceError(f"{where}.{key} must be a string, got {_kind(data[key])}")


def _validate_movement(movement: object, index: int) -> str:
    where = f"movements[{index}]"
    _closed_keys(movement, MOVEMENT_KEYS, where)
    assert isinstance(movement, Mapping)  # _closed_keys checked it; this narrows the type
    name = movement.get("name")
    if not isinstance(name, str) or not MOVEMENT_NAME_RE.fullmatch(name):
        raise PieceError(f"{where}.name must be a slug (letters, digits, - and _), got {name!r}")
    if name in c.PIECE_TERMINALS:
        raise PieceError(f"{where}.name {name!r} is reserved for rule targets")
    where = f"movement {name!r}"
    for key in ("persona", "instruction"):
        _optional_str(movement, key, where)
    if not str(movement.get("instruction") or "").strip():
        raise PieceError(f"{where} needs a non-empty instruction")
    _validate_permissions(movement, where)
    _validate_rules(movement.get("rules"), where)
    return name


def _validate_permissions(movement: Mapping[str, Any], where: str) -> None:
    """What the movement may do: edit, its permission mode, its tools."""
    if "edit" in movement and not isinstance(movement["edit"], bool):
        raise PieceError(f"{where}.edit must be true or false, got {movement['edit']!r}")
    mode = movement.get("required_permission_mode", _DEFAULT_MODE)
    if not isinstance(mode, str) or mode not in _MODE_RANK:
        raise PieceError(
            f"{where}.required_permission_mode must be one of "
            f"{', '.join(c.PERMISSION_MODES)}, got {mode!r}"
        )
    tools = movement.get("allowed_tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, str) and t.strip() for t in tools)
    ):
        raise PieceError(f"{where}.allowed_tools must be a list of tool names")


def _validate_rules(rules: object, where: str) -> None:
    if rules is None:
        return
    if not isinstance(rules, list):
        raise PieceError(f"{where}.rules must be a list, got {_kind(rules)}")
    for j, rule in enumerate(rules):
        rule_where = f"{where}.rules[{j}]"
        _closed_keys(rule, RULE_KEYS, rule_where)
        assert isinstance(rule, Mapping)
        for key in ("condition", "next"):
            value = rule.get(key)
            if not isinstance(value, str) or not value.strip():
                raise PieceError(f"{rule_where}.{key} must be a non-empty string, got {value!r}")


# --- escalation ----------------------------------------------------------------------


def _edit(m: Mapping[str, Any]) -> bool:
    return m.get("edit") is True


def _mode(m: Mapping[str, Any]) -> str:
    return str(m.get("required_permission_mode", _DEFAULT_MODE))


def _tools(m: Mapping[str, Any]) -> frozenset[str] | None:
    """The movement's tools, or None for "unrestricted" (no allowed_tools key)."""
    tools = m.get("allowed_tools")
    return None if tools is None else frozenset(tools)


def _movements(piece: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {m["name"]: m for m in piece.get("movements") or []}


def _ceiling(old: Sequence[Mapping[str, Any]]) -> tuple[bool, str, frozenset[str] | None]:
    """What the least privileged old movement may do: the bound for a new movement."""
    edit = all(_edit(m) for m in old)
    mode = min((_mode(m) for m in old), key=_MODE_RANK.__getitem__, default=_DEFAULT_MODE)
    restricted = [t for t in map(_tools, old) if t is not None]
    return edit, mode, frozenset.intersection(*restricted) if restricted else None


def _widening(
    label: str, new: Mapping[str, Any], edit: bool, mode: str, tools: frozenset[str] | None
) -> list[str]:
    """How `new` exceeds the bound (edit, mode, tools); empty when it does not."""
    found = []
    if _edit(new) and not edit:
        found.append(f"{label}: edit false -> true")
    if _MODE_RANK[_mode(new)] > _MODE_RANK[mode]:
        found.append(f"{label}: required_permission_mode {mode} -> {_mode(new)}")
    new_tools = _tools(new)
    if tools is not None:
        if new_tools is None:
            found.append(f"{label}: allowed_tools removed (would allow every tool)")
        elif new_tools - tools:
            found.append(f"{label}: gains tools {', '.join(sorted(new_tools - tools))}")
    return found


def escalations(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Every way `new` widens what `old` allowed, human-readable; empty means none.

    Both pieces must already be valid (see `validate_piece`).
    """
    old_moves = _movements(old)
    ceiling = _ceiling(list(old_moves.values()))
    found: list[str] = []
    for name, movement in _movements(new).items():
        if name in old_moves:
            before = old_moves[name]
            bound = (_edit(before), _mode(before), _tools(before))
            found += _widening(f"movement {name!r}", movement, *bound)
        else:
            found += _widening(f"new movement {name!r}", movement, *ceiling)
    old_limit, new_limit = old.get("max_movements"), new.get("max_movements")
    if old_limit is not None and new_limit is None:
        found.append(f"max_movements removed (was {old_limit})")
    elif old_limit is not None and new_limit > old_limit:
        found.append(f"max_movements {old_limit} -> {new_limit}")
    return found


# --- canonical text -------------------------------------------------------------------

_KEY_ORDER: Final = {
    "piece": ("name", "description", "max_movements", "initial_movement", "movements"),
    "movement": (
        "name",
        "persona",
        "instruction",
        "edit",
        "required_permission_mode",
        "allowed_tools",
        "rules",
    ),
    "rule": ("condition", "next"),
}


def _ordered(data: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """`data`'s keys in `order`, any others after them sorted (an invalid piece's)."""
    known = [k for k in order if k in data]
    rest = sorted((k for k in data if k not in order), key=str)
    return {k: data[k] for k in [*known, *rest]}


def _canonical_data(data: Mapping[str, Any]) -> dict[str, Any]:
    piece = _ordered(data, _KEY_ORDER["piece"])
    movements = piece.get("movements")
    if isinstance(movements, list):
        piece["movements"] = [_canonical_movement(m) for m in movements]
    return piece


def _canonical_movement(movement: object) -> object:
    if not isinstance(movement, Mapping):
        return movement
    out = _ordered(movement, _KEY_ORDER["movement"])
    rules = out.get("rules")
    if isinstance(rules, list):
        out["rules"] = [
            _ordered(r, _KEY_ORDER["rule"]) if isinstance(r, Mapping) else r for r in rules
        ]
    return out


def canonical_piece(data: Mapping[str, Any]) -> str:
    """The piece as this worker writes it: re-serialised from its parsed data, keys in the
    format's order, multi-line strings as literal blocks, every scalar written so that a
    YAML 1.1 and a YAML 1.2 reader read the same value (`edit: off` becomes
    `edit: false`, `max_movements: 014` becomes `12`, what PyYAML read). Comments and
    layout of the original are not kept. Raises PieceError if it cannot be written."""
    try:
        return dump_canonical(_canonical_data(data))
    except (UnsafeYamlError, yaml.YAMLError) as e:
        raise PieceError(f"piece cannot be written as canonical YAML: {e}") from e


def canonical_text(text: str) -> str:
    """`text`'s piece as canonical YAML (see `canonical_piece`); PieceError if it does not
    parse. Hashes, `piece_unchanged`, snapshots and diffs compare this text."""
    return canonical_piece(parse_piece_yaml(text))


# --- text a piece may not hold -------------------------------------------------------


def _strings(data: object) -> list[str]:
    """Every string in the parsed piece, keys included, in document order."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, Mapping):
        return [s for k, v in data.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(data, list):
        return [s for item in data for s in _strings(item)]
    return []


def unsafe_text(data: Mapping[str, Any]) -> str:
    """Why the piece is `invalid_text` (a control, bidi or tag character in any of its
    strings; line breaks and tabs are allowed in multi-line text), or ""."""
    found = find_unsafe_chars("".join(_strings(data)), allow="\n\t")
    if not found:
        return ""
    shown = ", ".join(escape_for_terminal(x, keep="") for x in found[:8])
    return f"the piece holds control, bidi or tag characters: {shown}"


def gained_directives(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The dangerous directives (`reflection.directives`) `new`'s text holds that `old`'s
    did not: a download-and-execute, reverse shell or exfiltration line added or changed."""
    return gained(_strings(old), _strings(new))


# --- guarded mode: what needs a human ------------------------------------------------


def can_run_a_shell(movement: Mapping[str, Any]) -> bool:
    """`Bash` (any case) in `allowed_tools`, or no `allowed_tools` list (every tool)."""
    tools = _tools(movement)
    return tools is None or any(t.strip().lower() == "bash" for t in tools)


def _powerful(movement: Mapping[str, Any]) -> str:
    """What makes the movement's text privileged ("can edit files", "can run a shell"),
    or "" when it can do neither."""
    powers = [
        label
        for label, has in (
            ("can edit files", _edit(movement)),
            ("can run a shell", can_run_a_shell(movement)),
        )
        if has
    ]
    return " and ".join(powers)


def _routes(piece: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(from, to) for every route into a movement: each rule's `next` that names one, and
    the entry (`initial_movement`, else the first movement) from `<start>`."""
    moves = _movements(piece)
    routes = {
        (m["name"], rule["next"])
        for m in moves.values()
        for rule in m.get("rules") or []
        if rule["next"] in moves
    }
    start = piece.get("initial_movement") or next(iter(moves), None)
    if start is not None:
        routes.add(("<start>", start))
    return routes


def _privileged_text_changes(
    old_moves: Mapping[str, Mapping[str, Any]], new_moves: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Each movement that can edit files or run a shell (as the old piece had it; a new
    movement as it is) whose instruction or persona the edit writes anew."""
    found = []
    for name, movement in new_moves.items():
        before = old_moves.get(name)
        power = _powerful(before if before is not None else movement)
        if before is None:
            found += [f"new movement {name!r} {power}"] if power else []
            continue
        changed = [k for k in ("instruction", "persona") if movement.get(k) != before.get(k)]
        if power and changed:
            found.append(f"{' and '.join(changed)} of movement {name!r} ({power}) changed")
    return found


def guarded_reasons(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Why `REFLECTION_PIECE_EDIT_MODE=guarded` stages this edit for an operator instead of
    writing it; empty means it applies. An edit is staged when it changes the
    instruction or persona of a movement that can edit files or run a shell (as the old
    piece had it; a new such movement counts too), removes a movement, or removes a
    route into one. Both pieces must be valid."""
    old_moves, new_moves = _movements(old), _movements(new)
    found = _privileged_text_changes(old_moves, new_moves)
    found += [f"movement {name!r} removed" for name in old_moves if name not in new_moves]
    found += [
        f"route {src} -> {dst} removed"
        for src, dst in sorted(_routes(old) - _routes(new))
        if dst in new_moves and (src in new_moves or src == "<start>")  # else: removed above
    ]
    return found


# --- the verdict on an edit ----------------------------------------------------------


def _load_valid(text: str, piece_name: str) -> dict[str, Any]:
    data = parse_piece_yaml(text)
    validate_piece(data, expected_name=piece_name)
    return data


def check_piece_edit(current_yaml: str, new_yaml: str, *, piece_name: str) -> tuple[Code, str]:
    """Judge a proposed whole-piece edit: (code, detail).

    In order: the new piece must parse and validate (`piece_invalid`), and so must the
    current one, or there is nothing to judge escalation against (`piece_invalid`); no
    string of the new piece may hold a control, bidi or tag character (`invalid_text`);
    the same canonical text as the current piece is `piece_unchanged` (so whitespace-,
    comment- or spelling-only edits such as `edit: no` for `edit: false` are); a
    dangerous directive the current piece did not hold is `dangerous_directive`; any
    widening is `piece_escalation`; otherwise `ok`.
    """
    try:
        new = _load_valid(new_yaml, piece_name)
    except PieceError as e:
        return Code.PIECE_INVALID, str(e)
    try:
        current = _load_valid(current_yaml, piece_name)
    except PieceError as e:
        return (
            Code.PIECE_INVALID,
            f"current piece is invalid; an edit cannot be checked for escalation ({e})",
        )
    problem = unsafe_text(new)
    if problem:
        return Code.INVALID_TEXT, problem
    try:
        unchanged = canonical_piece(new) == canonical_piece(current)
    except PieceError as e:
        return Code.PIECE_INVALID, str(e)
    if unchanged:
        return Code.PIECE_UNCHANGED, "the edit parses to the same piece as the current one"
    directives = gained_directives(current, new)
    if directives:
        return Code.DANGEROUS_DIRECTIVE, "gains a " + ", a ".join(directives) + " directive"
    widened = escalations(current, new)
    if widened:
        return Code.PIECE_ESCALATION, "; ".join(widened)
    return Code.OK, ""


# --- reading a piece file ------------------------------------------------------------


def load_piece_file(path: Path, *, root: Path | None = None) -> str:
    """Read a piece file: a regular file, not a symlink, at most MAX_PIECE_BYTES, UTF-8;
    with `root` (a user's home), through no link below it either.

    Raises FileNotFoundError when the file does not exist (callers fall back to the
    built-in), PieceError when it is a symlink, not a regular file, too large or not
    UTF-8, UnsafePathError for a link on the way; other OSErrors (I/O failures) propagate
    as the filesystem's problem.
    """
    try:
        fd = open_regular(path, os.O_RDONLY, root=root)  # never waits on a planted FIFO
    except NotRegularFileError as e:
        raise PieceError(str(e)) from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PieceError(f"{path} is a symlink; pieces are read only from regular files") from e
        raise
    try:
        raw = read_at_most(fd, c.MAX_PIECE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > c.MAX_PIECE_BYTES:
        raise PieceError(f"{path} is larger than {c.MAX_PIECE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PieceError(f"{path} is not UTF-8 (byte {e.start})") from e

"""`yaml.safe_load` with hard limits, for every YAML the worker reads (pieces, memory
frontmatter): one document only; no anchors, aliases (billion laughs) or explicit tags,
refused while composing, before anything is expanded or constructed; bounded nesting;
no merge, duplicate or non-scalar keys."""

from __future__ import annotations

import re
from typing import Any, Final

import yaml


class UnsafeYamlError(ValueError):
    """Raised when text is not one plain, bounded YAML document; the message says where."""


def _where(item: yaml.Event | yaml.Node) -> str:
    mark = item.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: str, max_depth: int) -> None:
        super().__init__(stream)
        self._depth = 0
        self._max_depth = max_depth

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise UnsafeYamlError(f"YAML aliases are not allowed ({_where(event)})")
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            raise UnsafeYamlError(f"YAML anchors are not allowed ({_where(event)})")
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise UnsafeYamlError(f"YAML tags are not allowed: {tag!r} ({_where(event)})")
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise UnsafeYamlError(
                    f"YAML nested deeper than {self._max_depth} levels ({_where(event)})"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise UnsafeYamlError(f"YAML merge keys (<<) are not allowed ({_where(key_node)})")
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise UnsafeYamlError(f"a mapping key must be a scalar ({_where(key_node)})")
            if key in seen:
                raise UnsafeYamlError(f"duplicate key {key!r} ({_where(key_node)})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        where = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        return f"{e.problem or e.context or 'syntax error'}{where}"
    return str(e)


def load_strict(text: str, *, max_depth: int) -> Any:
    """The single YAML document in `text`, or `UnsafeYamlError` saying what is wrong."""
    loader = _StrictLoader(text, max_depth)
    try:
        return loader.get_single_data()
    except yaml.composer.ComposerError as e:
        if "expected a single document" in str(e.context):
            raise UnsafeYamlError("more than one YAML document") from e
        raise UnsafeYamlError(f"not valid YAML: {_problem(e)}") from e
    except yaml.YAMLError as e:
        raise UnsafeYamlError(f"not valid YAML: {_problem(e)}") from e
    except UnsafeYamlError:
        raise
    except (ValueError, OverflowError, RecursionError) as e:  # 2001-02-30, a 5,000-digit int
        raise UnsafeYamlError(f"not valid YAML: {str(e)[:200]}") from e
    finally:
        loader.dispose()


# --- canonical writing -----------------------------------------------------------------

# Plain scalars a YAML 1.2 (core schema) reader resolves to something other than a string,
# where PyYAML (YAML 1.1) would write them plain: `0o14`, `1e3`, `.Inf`. PyYAML already
# quotes what YAML 1.1 reads otherwise (`off`, `yes`, `014`, `1_000`, `2001-02-03`).
_YAML12_NOT_STR: Final = re.compile(
    r"""^(?:
        ~|null|Null|NULL|true|True|TRUE|false|False|FALSE
      | [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+
      | [-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
      | [-+]?\.(?:inf|Inf|INF) | \.nan|\.NaN|\.NAN
    )$""",
    re.VERBOSE,
)


class _CanonicalDumper(yaml.SafeDumper):
    """Block style; multi-line strings as literal blocks; strings a YAML 1.1 or 1.2 reader
    could take for another type quoted; mapping keys in the order given."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # `key:\n  - item`, not `key:\n- item`

    def represent_str(self, data: str) -> yaml.ScalarNode:
        if "\n" in data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="|")
        if _YAML12_NOT_STR.match(data):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="'")
        return self.represent_scalar("tag:yaml.org,2002:str", data)


_CanonicalDumper.add_representer(str, _CanonicalDumper.represent_str)


def dump_canonical(data: Any) -> str:
    """`data` (plain mappings, lists and scalars, keys in the order to write) as canonical
    YAML: the same data always gives the same text, and every YAML 1.1 or 1.2 reader
    reads it back as `data`. Raises `UnsafeYamlError` if it would not read back equal."""
    text = yaml.dump(
        data,
        Dumper=_CanonicalDumper,
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
        width=1 << 30,
        indent=2,
    )
    if load_strict(text, max_depth=64) != data:
        raise UnsafeYamlError("the data does not survive a YAML round trip")
    return text

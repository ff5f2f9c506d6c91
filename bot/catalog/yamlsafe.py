"""YAML for catalog files: plain data only.

SafeLoader plus three refusals: explicit tags (even the harmless ones),
duplicate keys, and YAML 1.1's surprises (base-60 numbers, timestamps).
Anchors, aliases and merge keys (``<<: *hardened``) are fine.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import yaml

from bot.catalog.errors import Invalid

log = logging.getLogger(__name__)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last
    one, so a second `ports:` would quietly drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads an unquoted 22:22 as the base-60 number 1342 and 1000:1000
# as 61000: a port mapping or a user would silently change. These resolvers
# are SafeLoader's without the base-60 forms (as in YAML 1.2), so such values
# stay strings; dates stay strings too instead of becoming datetime objects.
_INT_RE = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_RESOLVER_OVERRIDES = {"tag:yaml.org,2002:int": _INT_RE, "tag:yaml.org,2002:float": _FLOAT_RE}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, _RESOLVER_OVERRIDES.get(tag, rx)) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else "YAML"


def load_yaml(text: str) -> Any:
    """Parse one YAML document of plain data; Invalid names the line.

    Explicit tags are refused even where SafeLoader would accept them
    (``!!binary``, ``!!set``) and before it would fail on them
    (``!!python/object``): a catalog is maps, lists, strings, numbers and
    booleans. Anchors, aliases and merge keys are fine.
    """
    try:
        for event in yaml.parse(text, Loader=_Loader):
            tag = getattr(event, "tag", None)
            if tag is not None:
                shown = tag.replace("tag:yaml.org,2002:", "!!")
                raise Invalid(
                    _line(event.start_mark),
                    f"YAML tag {shown} is refused: a catalog file is plain data "
                    "(maps, lists, strings, numbers, booleans)",
                )
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or exc.context or "malformed YAML").strip()
        if "expected a single document" in str(exc):
            problem = "one YAML document per file"
        elif "unhashable key" in problem:
            problem += ' (quote a value that starts with {, such as "{{ name }}")'
        raise Invalid(_line(mark), f"YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise Invalid("YAML", " ".join(str(exc).split())) from exc

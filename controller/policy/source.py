"""Reading a policy directory: which files count, their bytes, and YAML documents with line numbers.

The directory may be a Kubernetes ConfigMap volume: the visible `*.yaml` entries are symlinks into a
hidden `..data/` link that the kubelet swaps atomically. So hidden entries (`..data`,
`..2026_05_01_...`) are never listed, symlinks are followed, and `fingerprint` stats through them, so
a swap shows up as a change even though no visible name changed.

YAML is composed to a node tree first (every node keeps its start mark), so each value can be traced
back to the line it was written on; the plain Python value is constructed from the same tree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from controller.policy.errors import PolicyError, describe_value

POLICY_SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"

PathElem = str | int
FieldPath = tuple[PathElem, ...]
Fingerprint = tuple[tuple[str, int, int, int, int], ...]


@dataclass(frozen=True)
class SourceFile:
    path: str  # the directory as given, joined with the file name: what errors print
    data: bytes


@dataclass(frozen=True)
class NodeInfo:
    line: int  # 1-based; for a mapping entry the line of its key, for a list item the item's line
    raw: str | None  # a scalar exactly as written (`yes`, `"5"`), so errors can quote the input


@dataclass(frozen=True)
class ParsedDocument:
    """One YAML document: its Python value and the line of every node, by field path."""

    path: str
    index: int  # 0-based position in its file
    line: int
    value: object
    nodes: Mapping[FieldPath, NodeInfo] = field(repr=False)

    def locate(self, fpath: FieldPath) -> tuple[int, NodeInfo | None]:
        """The line of `fpath`, or of its nearest existing parent (a missing field's home); the
        node's info only when the path itself exists."""
        for n in range(len(fpath), -1, -1):
            info = self.nodes.get(fpath[:n])
            if info is not None:
                return info.line, info if n == len(fpath) else None
        return self.line, None


def is_policy_file(name: str) -> bool:
    return not name.startswith(".") and name.endswith(POLICY_SUFFIXES)


def list_policy_files(directory: str) -> list[str]:
    """Names of the policy files, sorted, non-recursive; raises OSError when the directory is unreadable."""
    names = []
    with os.scandir(directory) as it:
        for entry in it:
            if not is_policy_file(entry.name):
                continue
            try:
                if entry.is_dir():  # follows symlinks: a directory called x.yaml is not a policy file
                    continue
            except OSError:
                pass
            names.append(entry.name)
    return sorted(names)


def fingerprint(directory: str) -> Fingerprint:
    """(name, mtime_ns, size, inode, device) of every policy file, stat'ed through symlinks: cheap
    enough to call every tick, and it changes when a ConfigMap's `..data` link is swapped."""
    out = []
    for name in list_policy_files(directory):
        try:
            st = os.stat(os.path.join(directory, name))
            out.append((name, st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        except OSError:
            out.append((name, -1, -1, -1, -1))  # dangling link: read_directory reports it
    return tuple(out)


def read_directory(directory: str) -> tuple[list[SourceFile], list[PolicyError]]:
    """Every policy file's bytes, and an error for each one that cannot be read."""
    files: list[SourceFile] = []
    errors: list[PolicyError] = []
    try:
        names = list_policy_files(directory)
    except FileNotFoundError:
        return [], [
            PolicyError(directory, 0, "directory", "not found (expected a directory of policy files)")
        ]
    except NotADirectoryError:
        return [], [PolicyError(directory, 0, "directory", "not a directory (expected a directory)")]
    except OSError as e:
        return [], [PolicyError(directory, 0, "directory", f"cannot list ({e.strerror or e})")]
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                files.append(SourceFile(path, f.read()))
        except OSError as e:
            errors.append(
                PolicyError(path, 1, "file", f"cannot read (got {e.strerror or e}; expected a readable file)")
            )
    return files, errors


def decode(source: SourceFile) -> tuple[str | None, PolicyError | None]:
    try:
        return source.data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        line = source.data[: e.start].count(b"\n") + 1
        bad = source.data[e.start : e.start + 1].hex()
        return None, PolicyError(
            source.path, line, "file", f"not UTF-8 text (got byte 0x{bad}; expected UTF-8)"
        )


def parse_documents(path: str, text: str) -> tuple[list[ParsedDocument], list[PolicyError]]:
    """Every non-empty YAML document of one file. A syntax error ends the file (YAML cannot resync);
    documents before it are still returned so their own errors can be reported too."""
    docs: list[ParsedDocument] = []
    errors: list[PolicyError] = []
    loader: yaml.SafeLoader | None = None
    keys = SafeConstructor()
    index = 0
    try:
        loader = yaml.SafeLoader(text)  # checks every character up front: ReaderError
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node() guarantees a node
                break
            nodes: dict[FieldPath, NodeInfo] = {}
            _walk(node, (), node.start_mark.line + 1, nodes, set(), keys, path, errors)
            value = loader.construct_document(node)
            if value is not None:
                docs.append(ParsedDocument(path, index, node.start_mark.line + 1, value, nodes))
            index += 1
    except yaml.MarkedYAMLError as e:
        errors.append(_syntax_error(path, text, e))
    except yaml.YAMLError as e:  # ReaderError: a character YAML does not accept
        pos = getattr(e, "position", 0) or 0
        char = getattr(e, "character", None)
        got = f"character U+{char:04X}" if isinstance(char, int) else f"character {char!r}"
        line = text[:pos].count("\n") + 1
        errors.append(
            PolicyError(path, line, "yaml", f"unacceptable character (got {got}; expected printable text)")
        )
    except RecursionError:
        errors.append(PolicyError(path, 1, "yaml", "nesting too deep (expected a policy document)"))
    finally:
        if loader is not None:
            loader.dispose()
    return docs, errors


def _syntax_error(path: str, text: str, e: yaml.MarkedYAMLError) -> PolicyError:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark is not None else 1
    what = e.problem or e.context or "invalid YAML"
    if mark is not None:
        what += f" at column {mark.column + 1}"
    if e.context and e.problem and e.context_mark is not None:
        what += f", {e.context} on line {e.context_mark.line + 1}"
    lines = text.splitlines()
    got = describe_value(lines[line - 1].strip()) if 0 < line <= len(lines) else "end of file"
    return PolicyError(path, line, "yaml", f"{what} (got {got}; expected valid YAML)")


def _walk(
    node: Node,
    fpath: FieldPath,
    line: int,
    nodes: dict[FieldPath, NodeInfo],
    visited: set[int],
    keys: SafeConstructor,
    path: str,
    errors: list[PolicyError],
) -> None:
    """Record the line of every node by field path, and report duplicate keys (PyYAML keeps the last
    silently, which would hide a typo'd override). Aliased nodes are walked once: a billion-laughs
    document costs no more than its text."""
    nodes[fpath] = NodeInfo(line, node.value if isinstance(node, ScalarNode) else None)
    if isinstance(node, ScalarNode) or id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*fpath, i), item.start_mark.line + 1, nodes, visited, keys, path, errors)
    elif isinstance(node, MappingNode):
        seen: dict[PathElem, int] = {}
        for knode, vnode in node.value:
            if knode.tag == _MERGE_TAG:
                continue
            key = _key(knode, keys)
            if key is None:
                continue
            kline = knode.start_mark.line + 1
            if key in seen:
                errors.append(
                    PolicyError(
                        path,
                        kline,
                        render_path((*fpath, key)),
                        f"duplicate key (got {describe_value(key)} again, first on line {seen[key]}; "
                        "expected each key once)",
                    )
                )
            seen[key] = kline
            _walk(vnode, (*fpath, key), kline, nodes, visited, keys, path, errors)


def _key(knode: Node, keys: SafeConstructor) -> PathElem | None:
    if not isinstance(knode, ScalarNode):
        return None  # a complex key; construction reports it
    if knode.tag == _STR_TAG:
        return str(knode.value)
    try:
        value = keys.construct_object(knode)
    except yaml.YAMLError:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str | int) else str(value)


def render_path(fpath: FieldPath) -> str:
    """`spec.signals[0].target` from ('spec', 'signals', 0, 'target'); keys that are not plain
    identifiers are bracketed: `metadata.labels["team.io/name"]`."""
    out = ""
    for elem in fpath:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif elem and all(c.isalnum() or c in "_-" for c in elem):
            out += f".{elem}" if out else elem
        else:
            out += f'["{elem}"]'
    return out

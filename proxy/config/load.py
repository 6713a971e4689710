"""Load Istio YAML (files, directories, multi-document streams) into raw objects.

Every object keeps the file it came from and the line of every field, so later stages can report
`FILE:LINE: YAML.PATH: reason`. No validation happens here beyond "is this YAML an object with a kind";
non-Istio kinds are skipped with a notice. Pure functions, no asyncio.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from proxy.config.diagnostics import Diagnostic, Path, render_path

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
ISTIO_KINDS = ("Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry")
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(slots=True)
class RawObject:
    """One Istio object as written: plain dict/list/scalar values plus a line for every path."""

    kind: str
    api_version: str
    name: str
    namespace: str
    body: dict[str, Any]  # the whole document (apiVersion, kind, metadata, spec)
    file: str
    line: int  # line of the document's first key
    lines: dict[Path, int] = field(repr=False, default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.body.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def line_of(self, path: Path) -> int:
        """Line of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.line

    def at(self, path: Path, reason: str, severity: str = "error") -> Diagnostic:
        return Diagnostic(self.file, self.line_of(path), render_path(path), reason, severity)


@dataclass(slots=True)
class LoadResult:
    objects: list[RawObject] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # skipped kinds, one line each
    files: list[str] = field(default_factory=list)


def iter_config_files(paths: Iterable[str]) -> Iterator[str]:
    """Yield YAML files under each path (recursively for directories), sorted for a stable order.

    Hidden entries (`.git`, the Kubernetes ConfigMap `..2024_…` data dirs) are skipped: ConfigMap
    mounts expose the same files through the visible symlinks, so reading both would double them.
    """
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                        yield os.path.join(root, name)
        else:
            yield path


def load_paths(paths: Iterable[str]) -> LoadResult:
    result = LoadResult()
    for file in iter_config_files(paths):
        result.files.append(file)
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            result.errors.append(Diagnostic(file, 0, "", f"cannot read: {exc.strerror or exc}"))
            continue
        load_text(text, file, result)
    _check_duplicates(result)
    return result


def load_text(text: str, file: str, result: LoadResult | None = None) -> LoadResult:
    """Parse one YAML stream into `result` (a new one if not given)."""
    result = result if result is not None else LoadResult()
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        result.errors.append(Diagnostic(file, line, "", f"invalid YAML: {problem}"))
        return result
    for index, node in enumerate(nodes):
        if node is None:
            continue  # empty document (e.g. a trailing `---`)
        _add_document(node, index, file, result)
    return result


def _add_document(node: yaml.Node, index: int, file: str, result: LoadResult) -> None:
    line = node.start_mark.line + 1
    lines: dict[Path, int] = {}
    try:
        body = _to_python(node, (), lines)
    except _DuplicateKey as exc:
        result.errors.append(Diagnostic(file, exc.line, render_path(exc.path), "duplicate key"))
        return
    except yaml.YAMLError as exc:
        result.errors.append(Diagnostic(file, line, "", f"invalid YAML value: {exc}"))
        return
    if body is None:
        return  # an empty document (`---` followed by nothing or only comments)
    if not isinstance(body, dict):
        result.errors.append(Diagnostic(file, line, "", f"document {index + 1} is not a mapping"))
        return
    kind = body.get("kind")
    api_version = body.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        result.errors.append(Diagnostic(file, line, "", "document has no apiVersion/kind"))
        return
    group, _, version = api_version.rpartition("/")
    if group != ISTIO_GROUP or kind not in ISTIO_KINDS:
        result.notices.append(f"{file}:{line}: skipping {api_version} {kind} (not an Istio networking kind)")
        return
    if version not in ISTIO_VERSIONS:
        result.errors.append(
            Diagnostic(file, lines.get(("apiVersion",), line), "apiVersion",
                       f"unsupported version {version!r} (expected one of {', '.join(ISTIO_VERSIONS)})")
        )
        return
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name")
    namespace = metadata.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        result.errors.append(Diagnostic(file, lines.get(("metadata",), line), "metadata.name", "name is required"))
        return
    if not isinstance(namespace, str):
        result.errors.append(
            Diagnostic(file, lines.get(("metadata", "namespace"), line), "metadata.namespace", "must be a string")
        )
        return
    result.objects.append(RawObject(kind, api_version, name, namespace, body, file, line, lines))


class _DuplicateKey(Exception):
    def __init__(self, path: Path, line: int) -> None:
        super().__init__(render_path(path))
        self.path, self.line = path, line


_constructor = yaml.SafeLoader("")  # only used for its scalar constructors (int, float, bool, null…)


def _to_python(node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _constructor.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                key = str(key)
            child = (*path, key)
            if key in out:
                raise _DuplicateKey(child, key_node.start_mark.line + 1)
            out[key] = _to_python(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1  # the key's line: a block value starts one below
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), lines) for i, item in enumerate(node.value)]
    return _constructor.construct_object(node, deep=True)


def _check_duplicates(result: LoadResult) -> None:
    """The same (kind, namespace, name) twice is an error naming both places; the first one is kept."""
    seen: dict[tuple[str, str, str], RawObject] = {}
    kept: list[RawObject] = []
    for obj in result.objects:
        first = seen.setdefault(obj.key, obj)
        if first is obj:
            kept.append(obj)
            continue
        result.errors.append(
            Diagnostic(obj.file, obj.line, "metadata.name",
                       f"{obj.kind} {obj.namespace}/{obj.name} is already defined at {first.file}:{first.line}")
        )
    result.objects = kept

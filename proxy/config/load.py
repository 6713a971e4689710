"""Load Istio YAML (files, directories, multi-document streams) into raw objects.

Every object keeps the file it came from and the line of every field, so later stages can report
`FILE:LINE: YAML.PATH: reason`. No validation happens here beyond "is this YAML an object with a kind";
the Istio networking kinds, the Gateway API kinds and core Services are kept (`proxy.gatewayapi.kinds`),
other kinds are skipped with a notice. Pure functions, no asyncio.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from proxy.config.diagnostics import Diagnostic, Path, render_path
from proxy.gatewayapi import kinds as gateway_api
from proxy.rollout import kind as rollout_kind

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
ISTIO_KINDS = ("Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry")
YAML_SUFFIXES = (".yaml", ".yml")
# one config file may hold at most this much: parsing is CPU- and memory-bound (PyYAML needs ~30x the
# file's size), so a runaway file is rejected before it is read rather than stalling the proxy
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# libyaml when present: composing a big file is ~10x faster and builds fewer temporary objects
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def iter_config_files(paths: Iterable[str], errors: list[Diagnostic] | None = None) -> Iterator[str]:
    """Yield YAML files under each path (recursively for directories), sorted for a stable order.

    Hidden entries (`.git`, the Kubernetes ConfigMap `..2024_…` data dirs) are skipped: ConfigMap
    mounts expose the same files through the visible symlinks, so reading both would double them.
    A directory that cannot be listed is added to `errors` (an unreadable directory is not an empty one).
    """
    def unlistable(exc: OSError) -> None:
        if errors is not None and not isinstance(exc, FileNotFoundError):  # gone since listed: deleted
            errors.append(Diagnostic(exc.filename or "", 0, "", f"cannot read directory: {exc.strerror or exc}"))

    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path, onerror=unlistable, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                        yield os.path.join(root, name)
        else:
            yield path


def load_paths(paths: Iterable[str], max_bytes: int = DEFAULT_MAX_BYTES,
               previous: Mapping[str, list[RawObject]] | None = None) -> LoadResult:
    """Load every YAML file under `paths`. Each failure is a Diagnostic naming the file, never an exception.

    A 0-byte file is taken as not written yet (an editor truncates before it writes): it keeps the
    objects it had in `previous` (the last load that was served), with a notice. A file that is gone
    simply has no objects any more.
    """
    result = LoadResult()
    paths = list(paths)
    named = {p for p in paths if not os.path.isdir(p)}  # a file named on the command line must exist
    for file in iter_config_files(paths, result.errors):
        text = _read(file, max_bytes, result, missing_ok=file not in named)
        if text is None:
            continue
        result.files.append(file)
        if text:
            load_text(text, file, result)
            continue
        kept = list((previous or {}).get(file, ()))
        result.objects.extend(kept)
        detail = f"keeping its {len(kept)} object(s) until it has content" if kept else "no objects yet"
        result.notices.append(f"{file}: empty file (0 bytes), taken as not written yet: {detail}")
    _check_duplicates(result)
    return result


def _read(file: str, max_bytes: int, result: LoadResult, missing_ok: bool = True) -> str | None:
    """The file's text, or None: an error was added (unreadable, too large, not UTF-8) or it vanished."""
    try:
        with open(file, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            # read one byte past the limit: the size may have grown since fstat
            data = fh.read(max_bytes + 1) if size <= max_bytes else b""
    except FileNotFoundError as exc:
        if missing_ok:  # removed since its directory was listed: it is deleted, not broken
            return None
        result.errors.append(Diagnostic(file, 0, "", f"cannot read: {exc.strerror or exc}"))
        return None
    except OSError as exc:
        result.errors.append(Diagnostic(file, 0, "", f"cannot read: {exc.strerror or exc}"))
        return None
    if size > max_bytes or len(data) > max_bytes:
        result.errors.append(Diagnostic(file, 0, "", f"file is {_size(max(size, len(data)))}, over the limit of "
                                        f"{_size(max_bytes)} per config file (--max-config-bytes)"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        result.errors.append(Diagnostic(file, line, "", f"not UTF-8: byte 0x{data[exc.start]:02x} at offset "
                                        f"{exc.start} (YAML config must be UTF-8 text)"))
        return None


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{n} bytes"


def load_text(text: str, file: str, result: LoadResult | None = None, default_namespace: str = "default"
              ) -> LoadResult:
    """Parse one YAML stream into `result` (a new one if not given); objects without a
    `metadata.namespace` get `default_namespace`."""
    result = result if result is not None else LoadResult()
    try:
        nodes = _compose_all(text)
    except RecursionError:
        result.errors.append(Diagnostic(file, 0, "", "invalid YAML: nested too deeply"))
        return result
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        result.errors.append(Diagnostic(file, line, "", f"invalid YAML: {problem}"))
        return result
    # a fresh constructor per stream: a SafeLoader caches every object it constructs and never lets go
    constructor = yaml.SafeLoader("")
    for index, node in enumerate(nodes):
        if node is None:
            continue  # empty document (e.g. a trailing `---`)
        _add_document(node, index, file, result, constructor, default_namespace)
    return result


def _compose_all(text: str) -> list[yaml.Node | None]:
    try:
        return list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError:
        if _Loader is yaml.SafeLoader:
            raise
    # libyaml's messages say less ("found character that cannot start any token"): ask PyYAML's
    return list(yaml.compose_all(text, Loader=yaml.SafeLoader))


def _add_document(node: yaml.Node, index: int, file: str, result: LoadResult,
                  constructor: yaml.SafeLoader, default_namespace: str = "default") -> None:
    line = node.start_mark.line + 1
    lines: dict[Path, int] = {}
    try:
        body = _to_python(node, (), lines, constructor)
        constructor.constructed_objects.clear()
    except RecursionError:
        result.errors.append(Diagnostic(file, line, "", "invalid YAML: nested too deeply"))
        return
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
    versions = ISTIO_VERSIONS
    held = gateway_api.loaded_kind(api_version, kind)  # Gateway API kinds and core Service
    if held in gateway_api.REFUSED:
        result.errors.append(Diagnostic(file, lines.get(("kind",), line), "kind", gateway_api.REFUSED[held]))
        return
    if held is not None:
        kind, versions = held, gateway_api.allowed_versions(held)
    elif group == rollout_kind.GROUP and kind == rollout_kind.KIND:
        versions = rollout_kind.VERSIONS
    elif group != ISTIO_GROUP or kind not in ISTIO_KINDS:
        result.notices.append(f"{file}:{line}: skipping {api_version} {kind} (not an Istio networking kind)")
        return
    if version not in versions:
        result.errors.append(
            Diagnostic(file, lines.get(("apiVersion",), line), "apiVersion",
                       f"unsupported version {version!r} (expected one of {', '.join(versions)})")
        )
        return
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name")
    namespace = metadata.get("namespace") or default_namespace
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


def _to_python(node: yaml.Node, path: Path, lines: dict[Path, int], constructor: yaml.SafeLoader) -> Any:
    """Plain values with the line of every path; `constructor` is only used for scalars (int, bool, null…)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                key = str(key)
            child = (*path, key)
            if key in out:
                raise _DuplicateKey(child, key_node.start_mark.line + 1)
            out[key] = _to_python(value_node, child, lines, constructor)
            lines[child] = key_node.start_mark.line + 1  # the key's line: a block value starts one below
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), lines, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


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

"""Persisting objects written through the admin API (`apply`, `delete`) into the config directory.

Applied objects live in the FIRST config path, which must be a directory: one file per object named
`<kind>-<namespace>-<name>.yaml`, so a restart serves what was applied. An object defined anywhere else
(a multi-document file a user wrote, say) is cut out of that file when it is applied or deleted, keeping
the other documents' text byte for byte, so there is never a second definition. A file whose last
document goes is removed.

Writes are all-or-nothing as far as the file system allows: every new content is staged in a temp file
next to its target first; only when all are staged are they moved into place with `os.replace`. A
failure while staging leaves every file as it was. No asyncio.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml

from proxy.config.load import RawObject, load_text

Key = tuple[str, str, str]  # (kind, namespace, name)


class StoreError(Exception):
    """The config directory cannot take the change; `status` is the admin API's HTTP answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def object_filename(kind: str, namespace: str, name: str) -> str:
    return f"{kind.lower()}-{namespace}-{name}.yaml"


def store_dir(config_paths: list[str]) -> str:
    """The directory applied objects go to, or StoreError saying why there is none."""
    if not config_paths:
        raise StoreError("no config path: cannot persist applied objects")
    first = config_paths[0]
    if not os.path.isdir(first):
        raise StoreError(f"config path {first} is a file, not a directory: cannot persist applied objects "
                         "(run with a directory as the first --config)")
    if not os.access(first, os.W_OK | os.X_OK):
        raise StoreError(f"config directory {first} is read-only: cannot persist applied objects")
    return first


def render(obj: RawObject, source: str = "") -> str:
    """The stored text of an applied object: apiVersion, kind, metadata (with namespace), spec."""
    body = dict(obj.body)
    metadata = dict(body.get("metadata") or {})
    metadata.setdefault("namespace", obj.namespace)
    body["metadata"] = metadata
    ordered = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    ordered.update((k, v) for k, v in body.items() if k not in ordered)
    origin = f" from {source}" if source else ""
    header = f"# written by `shiftproxy apply`{origin}; `shiftproxy delete` removes it\n"
    return header + yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True)


def same_object(a: RawObject, b: RawObject) -> bool:
    """Equal for `apply`'s unchanged/configured answer: apiVersion, spec, labels and annotations."""
    def canonical(o: RawObject) -> str:
        meta = o.body.get("metadata") or {}
        return json.dumps([o.api_version, o.body.get("spec"), meta.get("labels"), meta.get("annotations")],
                          sort_keys=True, default=str)
    return canonical(a) == canonical(b)


# cutting documents out of a multi-document file ----------------------------------------------------


def document_spans(text: str) -> tuple[int, list[tuple[int, int]]]:
    """(header end, [(start, end) of each document]) as character offsets into `text`.

    A document runs from its start (its `---`, or its first token for an implicit first document) to the
    next document's start, so comments between documents stay with the document after the `---`. Text
    before the first document (a licence header, say) is the header and is never removed.
    """
    starts = [e.start_mark.index for e in yaml.parse(text, Loader=yaml.SafeLoader)
              if isinstance(e, yaml.DocumentStartEvent)]
    if not starts:
        return len(text), []
    ends = [*starts[1:], len(text)]
    return starts[0], list(zip(starts, ends, strict=True))


def remove_documents(text: str, keys: set[Key], file: str = "") -> tuple[str | None, set[Key]]:
    """`text` without the documents defining any of `keys`, and the keys actually found.

    The new text is None when no document with content is left (the file should go).
    """
    header_end, spans = document_spans(text)
    kept: list[str] = []
    found: set[Key] = set()
    for start, end in spans:
        chunk = text[start:end]
        defined = {o.key for o in load_text(chunk, file).objects}
        if defined & keys:
            found |= defined & keys
            continue
        kept.append(chunk)
    if not found:
        return text, found
    new = text[:header_end] + "".join(kept)
    if not any(node is not None and not _empty_scalar(node)
               for node in yaml.compose_all(new, Loader=yaml.SafeLoader)):
        return None, found
    return new, found


def _empty_scalar(node: yaml.Node) -> bool:
    return (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")
            and node.value in ("", "~", "null"))


# plans --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FileChange:
    path: str
    text: str | None  # None: remove the file


@dataclass(slots=True)
class Plan:
    """What an apply or delete will do. Nothing is written until `commit(plan.changes)`."""

    # the whole resulting config, objects as the client wrote them (for errors naming the client's file)
    objects: list[RawObject] = field(default_factory=list)
    # the same config with changed objects as they will be stored (file and lines of the stored file)
    stored: list[RawObject] = field(default_factory=list)
    results: list[tuple[RawObject, str]] = field(default_factory=list)  # created|configured|unchanged|…
    changes: list[FileChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def plan_apply(directory: str, current: list[RawObject], applied: list[RawObject]) -> Plan:
    """Create or replace each applied object by (kind, namespace, name) in `current`."""
    by_key = {o.key: o for o in current}
    plan = Plan()
    stored_new: dict[Key, RawObject] = {}
    writes: dict[str, tuple[Key, str]] = {}
    removals: dict[str, set[Key]] = {}
    for obj in applied:
        old = by_key.get(obj.key)
        if old is not None and same_object(old, obj):
            plan.results.append((obj, "unchanged"))
            continue
        plan.results.append((obj, "created" if old is None else "configured"))
        path = os.path.abspath(os.path.join(directory, object_filename(*obj.key)))
        text = render(obj, os.path.basename(obj.file))
        writes[path] = (obj.key, text)
        stored_new[obj.key] = load_text(text, os.path.join(directory, object_filename(*obj.key))).objects[0]
        if old is not None:
            removals.setdefault(os.path.abspath(old.file), set()).add(old.key)
    applied_by_key = {o.key: o for o in applied}
    plan.objects = [applied_by_key[o.key] if o.key in stored_new else o for o in current]
    plan.stored = [stored_new.get(o.key, o) for o in current]
    for obj in applied:
        if obj.key in stored_new and obj.key not in by_key:
            plan.objects.append(obj)
            plan.stored.append(stored_new[obj.key])
    plan.changes = _changes(writes, removals)
    return plan


def plan_delete(current: list[RawObject], targets: list[RawObject]) -> Plan:
    """Remove each target by (kind, namespace, name); `not found` for the ones that do not exist."""
    by_key = {o.key: o for o in current}
    plan = Plan()
    removals: dict[str, set[Key]] = {}
    gone: set[Key] = set()
    for target in targets:
        old = by_key.get(target.key)
        if old is None or target.key in gone:
            plan.results.append((target, "not found"))
            continue
        gone.add(target.key)
        plan.results.append((target, "deleted"))
        removals.setdefault(os.path.abspath(old.file), set()).add(old.key)
    plan.objects = [o for o in current if o.key not in gone]
    plan.stored = list(plan.objects)
    plan.changes = _changes({}, removals)
    return plan


def _changes(writes: dict[str, tuple[Key, str]], removals: dict[str, set[Key]]) -> list[FileChange]:
    """File contents after cutting `removals` out of their files and writing each object's own file.

    An object's own file is written whole; if it also held other documents (someone edited it), they are
    kept after the object.
    """
    changes: list[FileChange] = []
    for path in sorted(set(removals) | set(writes)):
        required = removals.get(path, set())
        own = writes.get(path)
        keys = required | ({own[0]} if own else set())
        text = _read(path, keys) if (required or os.path.exists(path)) else ""
        try:
            new, found = remove_documents(text, keys, path) if text else (None, set())
        except yaml.YAMLError as exc:
            raise StoreError(f"{path} is not valid YAML, so {_names(keys)} cannot be updated in it: "
                             f"{exc}") from exc
        if required - found:
            raise StoreError(f"{path} changed on disk: {_names(required - found)} is no longer in it; "
                             "try again", 409)
        if own is None:
            changes.append(FileChange(path, new))
            continue
        rest = "" if new is None or not text.strip() else new
        if rest and not rest.lstrip().startswith("---"):
            rest = "---\n" + rest
        changes.append(FileChange(path, own[1] + rest))
    return changes


def _read(path: str, keys: set[Key]) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise StoreError(f"cannot read {path} to update {_names(keys)}: {exc.strerror or exc}", 500) from exc


def _names(keys: Iterable[Key]) -> str:
    return ", ".join(f"{k} {ns}/{n}" for k, ns, n in sorted(keys))


# commit ---------------------------------------------------------------------------------------------


def commit(changes: list[FileChange]) -> None:
    """Stage every new content next to its file, then move them all into place (and remove emptied files).

    A failure while staging removes the temp files and raises StoreError: no file has changed.
    """
    staged: list[tuple[str, str]] = []  # (temp, target)
    try:
        for change in changes:
            if change.text is None:
                _check_removable(change.path)
                continue
            staged.append((_stage(change.path, change.text), change.path))
    except OSError as exc:
        for temp, _ in staged:
            _unlink_quietly(temp)
        raise _store_error(exc) from exc
    for temp, target in staged:
        os.replace(temp, target)
    for change in changes:
        if change.text is None:
            _unlink_quietly(change.path)


def _stage(target: str, text: str) -> str:
    directory = os.path.dirname(os.path.abspath(target))
    # a hidden temp name: the loader skips dot files, so a watcher reload never reads a half-written file
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if os.path.exists(target):
            os.chmod(temp, os.stat(target).st_mode & 0o7777)
        else:
            os.chmod(temp, 0o644)
    except OSError:
        _unlink_quietly(temp)
        raise
    return temp


def _check_removable(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, "Permission denied", directory)


def _store_error(exc: OSError) -> StoreError:
    where = exc.filename or ""
    directory = where if os.path.isdir(where) else os.path.dirname(where) or where
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"config directory {directory} is read-only: cannot persist applied objects")
    return StoreError(f"cannot write to config directory {directory}: {exc.strerror or exc}", 500)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


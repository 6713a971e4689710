"""Applied state: what `apply` and `delete` changed, kept in a state directory apart from the config.

The config paths may be read-only (a ConfigMap, a read-only bind mount) and are never written. Changes
made through the admin API live in the state directory instead and are laid over the config on every
load, so a restart serves what was applied:

    STATE_DIR/applied/<kind>_<namespace>_<name>.yaml   an applied object; replaces the config's object
    STATE_DIR/deleted/<kind>_<namespace>_<name>.json   a deleted object that a config file still defines:
                                                       hidden until it is applied again

Writes are all-or-nothing as far as the file system allows: every new content is staged in a hidden temp
file next to its target first; only when all are staged are they moved into place with `os.replace`.
No asyncio.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import yaml

from proxy.config.diagnostics import Diagnostic
from proxy.config.load import DEFAULT_MAX_BYTES, LoadResult, RawObject, load_paths, load_text

Key = tuple[str, str, str]  # (kind, namespace, name)
STATE_DIR_ENV = "SHIFTPROXY_STATE_DIR"
APPLIED = "applied"
DELETED = "deleted"


class StoreError(Exception):
    """The state directory cannot take the change; `status` is the admin API's HTTP answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


# where the state lives ---------------------------------------------------------------------------------


def default_state_dir(config_paths: Iterable[str]) -> str:
    """$XDG_STATE_HOME/shiftproxy/<digest of the config paths> (XDG default ~/.local/state).

    Per user, and per set of config paths: two proxies on one host with different config keep apart,
    and proxies reading the same config (a gateway and a sidecar, say) share what was applied.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    paths = sorted({os.path.abspath(p) for p in config_paths})
    digest = hashlib.sha256("\0".join(paths).encode()).hexdigest()[:12]
    return os.path.join(base, "shiftproxy", digest)


def resolve_state_dir(flag: str | None, config_paths: Iterable[str]) -> str:
    """--state-dir, else $SHIFTPROXY_STATE_DIR (either as given), else the per-user default."""
    return flag or os.environ.get(STATE_DIR_ENV) or default_state_dir(config_paths)


def check_state_dir(state_dir: str, config_paths: Iterable[str]) -> str | None:
    """Why `state_dir` cannot be used with these config paths, or None."""
    real = os.path.realpath(state_dir)
    for path in config_paths:
        config = os.path.realpath(path)
        if real == config or real.startswith(config.rstrip(os.sep) + os.sep) or \
                config.startswith(real.rstrip(os.sep) + os.sep):
            return (f"state directory {state_dir} overlaps config path {path}: applied state is kept apart from "
                    "the config (choose another --state-dir)")
    return None


def object_filename(kind: str, namespace: str, name: str, suffix: str = ".yaml") -> str:
    # `_` cannot appear in Kubernetes names; quoting it (and anything odd) keeps the name unambiguous
    return "_".join(quote(part, safe="-.").replace("_", "%5F") for part in (kind.lower(), namespace, name)) + suffix


# loading: config paths, then the state laid over them -------------------------------------------------


@dataclass(slots=True)
class State:
    directory: str
    applied: list[RawObject] = field(default_factory=list)
    deleted: dict[Key, str] = field(default_factory=dict)  # key -> its tombstone file
    errors: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """For /config_dump."""
        return {
            "dir": self.directory,
            "applied": [{"kind": o.kind, "namespace": o.namespace, "name": o.name, "file": o.file}
                        for o in sorted(self.applied, key=lambda o: o.key)],
            "deleted": [{"kind": k, "namespace": ns, "name": n, "file": f}
                        for (k, ns, n), f in sorted(self.deleted.items())],
        }


@dataclass(slots=True)
class Loaded:
    """One load: the config paths alone, the state, and what is served (the state laid over the config)."""

    config: LoadResult
    state: State
    served: LoadResult

    def by_file(self) -> dict[str, list[RawObject]]:
        """Objects per file, for the next load's 0-byte files."""
        out: dict[str, list[RawObject]] = {}
        for obj in (*self.config.objects, *self.state.applied):
            out.setdefault(obj.file, []).append(obj)
        return out


def load_state(directory: str, max_bytes: int = DEFAULT_MAX_BYTES,
               previous: Mapping[str, list[RawObject]] | None = None) -> State:
    state = State(directory)
    applied_dir = os.path.join(directory, APPLIED)
    if os.path.isdir(applied_dir):
        loaded = load_paths([applied_dir], max_bytes, previous)
        state.applied, state.errors, state.files = loaded.objects, loaded.errors, loaded.files
        state.notices = loaded.notices
    deleted_dir = os.path.join(directory, DELETED)
    if os.path.isdir(deleted_dir):
        for name in sorted(os.listdir(deleted_dir)):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            path = os.path.join(deleted_dir, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    entry = json.load(fh)
                key = (entry["kind"], entry["namespace"], entry["name"])
                if not all(isinstance(part, str) for part in key):
                    raise TypeError("kind, namespace and name must be strings")
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                state.errors.append(Diagnostic(path, 0, "", f"unreadable deletion record: {exc}"))
                continue
            state.deleted[key] = path
            state.files.append(path)
    return state


def overlay(config: LoadResult, state: State) -> LoadResult:
    """The config's objects with deleted ones hidden and applied ones replacing or adding to them."""
    applied = {o.key: o for o in state.applied}
    served = LoadResult(errors=[*config.errors, *state.errors], notices=[*config.notices, *state.notices],
                        files=[*config.files, *state.files])
    served.objects = [applied.pop(o.key, o) for o in config.objects if o.key not in state.deleted]
    served.objects.extend(applied.values())
    return served


def load_config(config_paths: list[str], state_dir: str, max_bytes: int = DEFAULT_MAX_BYTES,
                previous: Mapping[str, list[RawObject]] | None = None) -> Loaded:
    config = load_paths(config_paths, max_bytes, previous)
    state = load_state(state_dir, max_bytes, previous)
    return Loaded(config, state, overlay(config, state))


# rendering and comparing ------------------------------------------------------------------------------


def render(obj: RawObject, source: str = "") -> str:
    """The stored text of an applied object: apiVersion, kind, metadata (with namespace), spec."""
    body = dict(obj.body)
    metadata = dict(body.get("metadata") or {})
    metadata["namespace"] = obj.namespace
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


def plan_apply(loaded: Loaded, applied: list[RawObject]) -> Plan:
    """Create or replace each applied object by (kind, namespace, name) in what is served."""
    directory = loaded.state.directory
    by_key = {o.key: o for o in loaded.served.objects}
    plan = Plan()
    stored_new: dict[Key, RawObject] = {}
    for obj in applied:
        old = by_key.get(obj.key)
        if old is not None and same_object(old, obj):
            plan.results.append((obj, "unchanged"))
            continue
        plan.results.append((obj, "created" if old is None else "configured"))
        path = os.path.join(directory, APPLIED, object_filename(*obj.key))
        text = render(obj, os.path.basename(obj.file))
        plan.changes.append(FileChange(path, text))
        stored_new[obj.key] = load_text(text, path).objects[0]
        if obj.key in loaded.state.deleted:
            plan.changes.append(FileChange(loaded.state.deleted[obj.key], None))
    applied_by_key = {o.key: o for o in applied}
    current = loaded.served.objects
    plan.objects = [applied_by_key[o.key] if o.key in stored_new else o for o in current]
    plan.stored = [stored_new.get(o.key, o) for o in current]
    for obj in applied:
        if obj.key in stored_new and obj.key not in by_key:
            plan.objects.append(obj)
            plan.stored.append(stored_new[obj.key])
    return plan


def plan_delete(loaded: Loaded, targets: list[RawObject]) -> Plan:
    """Remove each target by (kind, namespace, name); `not found` for the ones not served.

    An applied object's file goes; an object a config file defines gets a deletion record, since the
    config is never written.
    """
    directory = loaded.state.directory
    by_key = {o.key: o for o in loaded.served.objects}
    in_state = {o.key: o.file for o in loaded.state.applied}
    in_config = {o.key for o in loaded.config.objects}
    plan = Plan()
    gone: set[Key] = set()
    for target in targets:
        if target.key not in by_key or target.key in gone:
            plan.results.append((target, "not found"))
            continue
        gone.add(target.key)
        plan.results.append((target, "deleted"))
        if target.key in in_state:
            plan.changes.append(FileChange(in_state[target.key], None))
        if target.key in in_config:
            kind, namespace, name = target.key
            record = json.dumps({"kind": kind, "namespace": namespace, "name": name,
                                 "deleted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            plan.changes.append(FileChange(os.path.join(directory, DELETED, object_filename(*target.key, ".json")),
                                           record + "\n"))
    plan.objects = [o for o in loaded.served.objects if o.key not in gone]
    plan.stored = list(plan.objects)
    return plan


# commit ---------------------------------------------------------------------------------------------


def commit(changes: list[FileChange], state_dir: str) -> None:
    """Stage every new content next to its file, then move them all into place (and remove files).

    A failure while staging removes the temp files and raises StoreError naming `state_dir`: no file
    has changed.
    """
    staged: list[tuple[str, str]] = []  # (temp, target)
    try:
        for change in changes:
            directory = os.path.dirname(change.path)
            if change.text is None:
                if not os.access(directory, os.W_OK | os.X_OK):
                    raise OSError(errno.EACCES, "Permission denied", directory)
                continue
            os.makedirs(directory, exist_ok=True)
            staged.append((_stage(change.path, change.text), change.path))
    except OSError as exc:
        for temp, _ in staged:
            _unlink_quietly(temp)
        raise _store_error(exc, state_dir) from exc
    for temp, target in staged:
        os.replace(temp, target)
    for change in changes:
        if change.text is None:
            _unlink_quietly(change.path)


def _stage(target: str, text: str) -> str:
    directory = os.path.dirname(target)
    # a hidden temp name: the loader skips dot files, so a watcher reload never reads a half-written file
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temp, 0o644)
    except OSError:
        _unlink_quietly(temp)
        raise
    return temp


def _store_error(exc: OSError, state_dir: str) -> StoreError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"state directory {state_dir} is not writable: cannot persist applied objects "
                          f"(choose a writable --state-dir or ${STATE_DIR_ENV})")
    return StoreError(f"cannot write to state directory {state_dir}: {exc.strerror or exc}", 500)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

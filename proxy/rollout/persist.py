"""Rollout state in the state directory: STATE_DIR/rollouts/<namespace>_<name>.json, written whole.

The file is the rollout's intent (phase, step, the canary weight wanted) and its history, so a restarted
proxy resumes where it was. The config watcher ignores this directory: these files are not config.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile

from proxy.config.store import object_filename
from proxy.rollout.machine import RolloutState

log = logging.getLogger("shiftproxy.rollout")
DIRECTORY = "rollouts"


def state_path(state_dir: str, namespace: str, name: str) -> str:
    return os.path.join(state_dir, DIRECTORY, object_filename("rollout", namespace, name, ".json"))


def load(state_dir: str, namespace: str, name: str) -> RolloutState | None:
    path = state_path(state_dir, namespace, name)
    try:
        with open(path, encoding="utf-8") as fh:
            return RolloutState.from_json(json.load(fh))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.error("rollout state %s is unreadable (%s): the rollout starts over", path, exc)
        return None


def save(state_dir: str, namespace: str, name: str, state: RolloutState) -> None:
    path = state_path(state_dir, namespace, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".rollout.", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state.to_json(), fh, indent=1)
        os.replace(temp, path)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def remove(state_dir: str, namespace: str, name: str) -> None:
    try:
        os.unlink(state_path(state_dir, namespace, name))
    except OSError:
        pass


def try_lock(state_dir: str, namespace: str, name: str) -> int | None:
    """Hold the rollout's lock file for this process's life; None when another proxy sharing this state
    directory holds it (that one drives the rollout). The kernel releases it when the process ends."""
    path = state_path(state_dir, namespace, name)[: -len(".json")] + ".lock"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        log.error("cannot create rollout lock %s: %s", path, exc.strerror or exc)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    try:
        os.close(fd)  # closing the descriptor releases the flock
    except OSError:
        pass

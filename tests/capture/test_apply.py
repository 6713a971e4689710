"""`shiftproxy iptables` against the real tools: installed and removed in a namespace of the test's own,
and the clear errors without the tools or the privilege."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.netns import ensure_iptables
from tests.paths import ROOT

SHIFTPROXY = [sys.executable, "-m", "proxy", "iptables"]


def in_namespace(script: str) -> subprocess.CompletedProcess[str]:
    reason = ensure_iptables()
    if reason:
        pytest.skip(reason)
    return subprocess.run(["unshare", "-n", "sh", "-ec", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_install_twice_then_cleanup() -> None:
    sp = " ".join(SHIFTPROXY)
    run = in_namespace(f"{sp} --exclude-ports 22 --inbound-ports 9080; {sp} --exclude-ports 22 --inbound-ports 9080;"
                       f" iptables-save -t nat; echo ==== ; {sp} --cleanup; iptables-save -t nat")
    assert run.returncode == 0, run.stderr
    installed, removed = run.stdout.split("====")
    assert installed.count("-A OUTPUT -p tcp -j SHIFTPROXY_OUTPUT") == 1  # a second run replaced the first
    assert "-A SHIFTPROXY_OUTPUT -m owner --uid-owner 1337 -j RETURN" in installed
    assert "-A SHIFTPROXY_OUTPUT -p tcp -m tcp --dport 22 -j RETURN" in installed
    assert "-A SHIFTPROXY_INBOUND -p tcp -m tcp --dport 9080 -j SHIFTPROXY_IN_REDIRECT" in installed
    assert "SHIFTPROXY" not in removed


def test_no_tool_is_a_clear_error() -> None:
    run = subprocess.run(SHIFTPROXY, cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": "/nonexistent"})
    assert run.returncode == 1
    assert "neither iptables nor nft is installed" in run.stderr


def test_no_privilege_is_a_clear_error() -> None:
    reason = ensure_iptables()
    if reason:
        pytest.skip(reason)
    # as uid 1337 without capabilities (but able to find the interpreter wherever it is installed)
    run = subprocess.run(["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "--inh-caps=+dac_read_search",
                          "--ambient-caps=+dac_read_search", *SHIFTPROXY], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert run.returncode == 1
    assert "needs CAP_NET_ADMIN" in run.stderr

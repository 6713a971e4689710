"""`shiftproxy iptables` against the real tools: installed and removed in a namespace of the test's own,
and the clear errors without the tools or the privilege."""

from __future__ import annotations

import json
import os
import shutil
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


REDIRECT_PROBE = """
import json, socket, subprocess, sys
from proxy.capture.original_dst import original_dst
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run([sys.executable, "-m", "proxy", "iptables", "--backend", sys.argv[1]], check=True, capture_output=True)
listener = socket.create_server(("127.0.0.1", 15001))
seen = []
for address in (("127.10.0.2", 9080), ("127.0.0.1", 15001)):  # a VIP (redirected), the listener itself
    client = socket.create_connection(address, timeout=5)
    accepted, _ = listener.accept()
    seen.append([original_dst(accepted), list(accepted.getsockname())])
    accepted.close()
    client.close()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_a_redirected_connection_reports_where_it_was_going(backend: str) -> None:
    reason = ensure_iptables()
    if reason:
        pytest.skip(reason)
    if not shutil.which(backend):
        pytest.skip(f"{backend} is not installed")
    run = subprocess.run(["unshare", "-n", sys.executable, "-c", REDIRECT_PROBE, backend], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    (vip, vip_local), (direct, direct_local) = json.loads(run.stdout)
    assert vip == ["127.10.0.2", 9080] and vip_local == ["127.0.0.1", 15001]
    assert direct in (None, direct_local)  # not redirected: no NAT entry, or the listener's own address

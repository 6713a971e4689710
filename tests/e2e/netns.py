"""What the capture tests need from the machine: root, a network namespace, iptables (installed when missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def ensure_iptables() -> str | None:
    """None when iptables is usable here, else why not. As root, installs the Debian package if missing."""
    if sys.platform != "linux":
        return "transparent capture is Linux-only (netfilter)"
    if os.geteuid() != 0:
        return "needs root to create a network namespace and install netfilter rules"
    for tool in ("unshare", "setpriv", "ip"):
        if not shutil.which(tool):
            return f"{tool} (util-linux / iproute2) is not installed"
    if not shutil.which("iptables") and not shutil.which("nft"):
        if not shutil.which("apt-get"):
            return "neither iptables nor nft is installed, and there is no apt-get to install iptables"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = subprocess.run(["apt-get", "install", "-y", "-q", "iptables"], capture_output=True, text=True,
                                 env=env, timeout=600)
        if install.returncode != 0:  # the package lists may be missing on a fresh image
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
            install = subprocess.run(["apt-get", "install", "-y", "-q", "iptables"], capture_output=True,
                                     text=True, env=env, timeout=600)
        if install.returncode != 0:
            return f"apt-get install iptables failed: {install.stderr.strip()[-300:]}"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    return None

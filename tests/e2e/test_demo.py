"""`shiftproxy demo --scripted`: both seed tasks on local processes, with the splits it prints checked."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from proxy.demo import busy_ports
from tests.paths import ROOT
from tests.stats import binomial_interval

N = 200


def parse_tables(output: str) -> dict[str, dict[str, int]]:
    tables: dict[str, dict[str, int]] = {}
    current = ""
    for line in output.splitlines():
        if line.strip().startswith("after "):
            current = line.strip()[len("after "):]
            tables[current] = {}
        elif m := re.match(r"\s*\| (.+?) \| (\d+) \| \d+ % \|", line):
            tables[current][m.group(1)] = int(m.group(2))
    return tables


def test_scripted_demo_shows_the_seed_splits() -> None:
    busy = busy_ports()
    if busy:
        pytest.skip("demo ports in use: " + ", ".join(busy))
    out = subprocess.run([sys.executable, "-m", "proxy", "demo", "--scripted", "--requests", str(N)],
                         capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    tables = parse_tables(out.stdout)
    assert tables["virtual-service-all-v1.yaml"] == {"no stars (v1)": N}
    half = tables["virtual-service-reviews-50-v3.yaml"]
    lo, hi = binomial_interval(N, 0.5)
    assert set(half) == {"no stars (v1)", "red stars (v3)"}, half  # never black: v2 gets nothing
    assert lo <= half["red stars (v3)"] <= hi, half
    assert tables["virtual-service-reviews-v3.yaml"] == {"red stars (v3)": N}
    assert tables["tcp-echo-all-v1.yaml"] == {"one": N}
    lo, hi = binomial_interval(N, 0.2)
    twenty = tables["tcp-echo-20-v2.yaml"]
    assert twenty["one"] + twenty["two"] == N and lo <= twenty["two"] <= hi, twenty
    assert "configured" in out.stdout or "created" in out.stdout  # apply's kubectl-style lines are shown
    assert busy_ports() == []  # Ctrl-C/exit leaves no process behind holding a port

"""Locations tests share: the Istio samples live beside the project, never copied into it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "istio-samples"
BOOKINFO_NET = SAMPLES / "bookinfo" / "networking"
TCP_ECHO = SAMPLES / "tcp-echo"

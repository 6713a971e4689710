"""Load benchmarks: shiftproxy next to Envoy, nginx and a direct connection, on the same backends.

`python -m benchmarks.run` (or `make bench`) starts every target side by side, drives the same loads
through each of them in interleaved rounds, and writes a markdown report to `benchmarks/results/`.
The pure parts (Istio → Envoy bootstrap translation, statistics and report rendering) are importable
without any of the external tools installed.
"""

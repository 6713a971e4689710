"""Progressive delivery: a `Rollout` (shiftproxy.io/v1alpha1) shifts one VirtualService route from a
stable to a canary subset in steps, gated by the proxy's own per-version metrics.

kind.py (names, importable by the loader), spec.py (parse and validate, pure), machine.py (the step
state machine, pure), analysis.py (windowed per-version counts and gates), route.py (the route to
write, pure), persist.py (state and lock in the state directory), controller.py (the asyncio driver in
the admin worker), cli.py (`shiftproxy rollout ...`).
"""

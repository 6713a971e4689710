"""Transparent capture: the rules that redirect a pod's TCP to the sidecar, and what the sidecar does
with a redirected connection (its original destination → service → protocol → routes)."""

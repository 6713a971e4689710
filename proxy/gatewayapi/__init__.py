"""The Kubernetes Gateway API (Gateway, HTTPRoute, TCPRoute, TLSRoute, ReferenceGrant) and core Service.

Validated with `FILE:LINE: YAML.PATH: reason` diagnostics like the Istio kinds (`validate`), resolved
against each other (`resolve`: listeners, attachments, backends, with the conditions `get` shows as
status) and translated into the Istio-shaped objects the compiler already handles (`translate`).
Submodules are imported where used: `kinds` must stay importable by the loader without a cycle.
"""

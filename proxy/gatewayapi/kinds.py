"""The Kubernetes kinds read beside Istio's: the Gateway API (gateway.networking.k8s.io) and core `Service`.

Constants only (no imports from `proxy.config`), so the loader can recognise these kinds without a cycle.
The Gateway API's `Gateway` shares its kind name with Istio's, so it is held under its qualified name
`Gateway.gateway.networking.k8s.io` (as `kubectl` accepts it) and the two never collide.
"""

from __future__ import annotations

GROUP = "gateway.networking.k8s.io"
VERSIONS = ("v1", "v1beta1", "v1alpha2")
GATEWAY = f"Gateway.{GROUP}"  # the qualified kind the loader gives a Gateway API Gateway
HTTP_ROUTE = "HTTPRoute"
TCP_ROUTE = "TCPRoute"
TLS_ROUTE = "TLSRoute"
REFERENCE_GRANT = "ReferenceGrant"
SERVICE = "Service"  # core v1
ROUTE_KINDS = (HTTP_ROUTE, TCP_ROUTE, TLS_ROUTE)
# kinds of the group as written, and the versions each is served at
GROUP_KINDS = {"Gateway": VERSIONS, HTTP_ROUTE: VERSIONS, TCP_ROUTE: ("v1alpha2",), TLS_ROUTE: ("v1alpha2",),
               REFERENCE_GRANT: ("v1beta1", "v1alpha2")}
# written kinds this proxy refuses with a reason (rather than skipping them as unrelated)
REFUSED = {"GRPCRoute": "GRPCRoute is not supported: this proxy speaks HTTP/1.1 only (no HTTP/2, so no gRPC); "
                        "route gRPC-Web or HTTP/1.1 traffic with an HTTPRoute",
           "UDPRoute": "UDPRoute is not supported: this proxy relays TCP only"}
# every kind held in a loaded config that this package (not the Istio validator and compiler) handles
KINDS = frozenset({GATEWAY, HTTP_ROUTE, TCP_ROUTE, TLS_ROUTE, REFERENCE_GRANT, SERVICE})


def loaded_kind(api_version: str, kind: str) -> str | None:
    """The kind a loaded object is held under, or None when the document is not one of these kinds."""
    group, _, _ = api_version.rpartition("/")
    if group == GROUP and (kind in GROUP_KINDS or kind in REFUSED):
        return GATEWAY if kind == "Gateway" else kind
    if api_version == "v1" and kind == SERVICE:
        return SERVICE
    return None


def allowed_versions(kind: str) -> tuple[str, ...]:
    if kind == SERVICE:
        return ("v1",)
    return GROUP_KINDS.get("Gateway" if kind == GATEWAY else kind, VERSIONS)


def written_kind(kind: str) -> str:
    """The kind as a manifest spells it."""
    return "Gateway" if kind == GATEWAY else kind


def group_of(kind: str) -> str:
    return "" if kind == SERVICE else GROUP


def is_gateway_api(kind: str) -> bool:
    return kind in KINDS

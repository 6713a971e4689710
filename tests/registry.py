"""ServiceEntries standing in for the Kubernetes registry of the Istio samples (no Kubernetes here)."""

from __future__ import annotations


def http_service_entry(name: str, ports_by_version: dict[str, int], port: int = 9080) -> str:
    """A STATIC ServiceEntry for an HTTP service: one 127.0.0.1 endpoint per version, labelled `app` and
    `version` as the samples' pods are."""
    endpoints = "".join(
        f"  - {{address: 127.0.0.1, ports: {{http: {target}}}, labels: {{app: {name}, version: {version}}}}}\n"
        for version, target in ports_by_version.items())
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}"""


REVIEWS_SE = http_service_entry("reviews", {"v1": 9091, "v2": 9092, "v3": 9093})

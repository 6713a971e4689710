"""Across objects: references that do not resolve, reported as warnings the way `istioctl analyze`
does: subsets no DestinationRule defines, hosts no ServiceEntry defines, gateways and delegate
VirtualServices that do not exist, ServiceEntry workload selectors that select no WorkloadEntry."""

from __future__ import annotations

from proxy.config.delegate import merge_http_routes
from proxy.config.diagnostics import Path
from proxy.config.hosts import check_wildcard_domain, fqdn, host_matches, is_ip
from proxy.config.schema import Msg, Report
from proxy.config.validate.common import MESH, _msgs
from proxy.config.validate.objects import _Checked

_SUBSET_NC = "requests will get 503 NC"


def _warn(r: Report, path: Path, reason: str) -> None:
    """Cross-object warnings stay quiet where the object itself already has an error."""
    if not r.has_error_within(path):
        r.warn(path, reason)


class _CrossCheck:
    def __init__(self, checked: list[_Checked]) -> None:
        self.checked = [c for c in checked if c.spec is not None]
        self.service_hosts: list[str] = []  # FQDNs (or wildcards) of every ServiceEntry host
        self.subsets: dict[str, set[str]] = {}  # DestinationRule host FQDN → subset names
        self.gateways: set[tuple[str, str]] = set()
        self.virtual_services: dict[tuple[str, str], Msg] = {}
        self.workload_entries: list[tuple[str, dict[str, str]]] = []
        for c in self.checked:
            spec, ns = c.spec, c.obj.namespace
            assert spec is not None
            if c.obj.kind == "ServiceEntry":
                self.service_hosts += [fqdn(h, ns) for h in spec.get("hosts") or [] if isinstance(h, str)]
            elif c.obj.kind == "DestinationRule" and isinstance(host := spec.get("host"), str):
                names = {s["name"] for s in _msgs(spec.get("subsets")) if isinstance(s.get("name"), str)}
                self.subsets.setdefault(fqdn(host, ns), set()).update(names)
            elif c.obj.kind == "Gateway":
                self.gateways.add((ns, c.obj.name))
            elif c.obj.kind == "VirtualService":
                self.virtual_services[(ns, c.obj.name)] = spec
            elif c.obj.kind == "WorkloadEntry":
                self.workload_entries.append((ns, spec.get("labels") or {}))

    def run(self) -> None:
        for c in self.checked:
            assert c.spec is not None
            if c.obj.kind == "VirtualService":
                self._virtual_service(c.report, c.spec, c.obj.namespace)
            elif c.obj.kind == "DestinationRule":
                host = c.spec.get("host")
                if isinstance(host, str) and "*" not in host and not check_wildcard_domain(host):
                    self._known_host(c.report, c.spec.at("host"), fqdn(host, c.obj.namespace))
            elif c.obj.kind == "ServiceEntry":
                self._selected_workloads(c.report, c.spec, c.obj.namespace)

    def _known_host(self, r: Report, path: Path, host: str) -> None:
        if is_ip(host) or any(host_matches(h, host) if h.startswith("*") else h == host
                              for h in self.service_hosts):
            return
        _warn(r, path, f"host {host} is not defined by any ServiceEntry: requests to it will fail "
                     "(no service, no endpoints)")

    def _subsets_for(self, host: str) -> set[str] | None:
        if host in self.subsets:
            return self.subsets[host]
        # Istio picks the most specific wildcard DestinationRule host
        wild = sorted((h for h in self.subsets if h.startswith("*") and host_matches(h, host)), key=len, reverse=True)
        return self.subsets[wild[0]] if wild else None

    def _virtual_service(self, r: Report, vs: Msg, ns: str) -> None:
        gateways = [g for g in vs.get("gateways") or [] if isinstance(g, str)]
        for k, gateway in enumerate(gateways):
            if gateway == MESH:
                continue
            key = self._gateway_key(gateway, ns)
            if key is not None and key not in self.gateways:
                _warn(r, vs.at("gateways", k), f"gateway {key[0]}/{key[1]} is not defined by any Gateway: these "
                                             "rules apply to no listener")
        warned: set[str] = set()  # one "not defined by any ServiceEntry" per host and VirtualService
        if not gateways or MESH in gateways:
            for k, host in enumerate(vs.get("hosts") or []):
                if isinstance(host, str) and "*" not in host and fqdn(host, ns) not in warned:
                    warned.add(fqdn(host, ns))
                    self._known_host(r, vs.at("hosts", k), fqdn(host, ns))
        for dest in self._destinations(vs):
            host = dest.get("host")
            if not isinstance(host, str) or not host or check_wildcard_domain(host):
                continue
            full = fqdn(host, ns)
            subset = dest.get("subset")
            if isinstance(subset, str) and subset:
                if subset not in (self._subsets_for(full) or set()):
                    _warn(r, dest.at("subset"), f"subset {subset} is not defined by any DestinationRule for {full}: "
                                              f"{_SUBSET_NC}")
            if full not in warned and "*" not in full:
                warned.add(full)
                self._known_host(r, dest.at("host"), full)
        for rule in _msgs(vs.get("http")):
            delegate = rule.get("delegate")
            if isinstance(delegate, Msg) and not delegate.get("name") and "name" not in delegate.bad:
                _warn(r, rule.at("delegate"), "delegate has no name: the rule is ignored (no VirtualService to "
                                            "delegate to)")
            elif isinstance(delegate, Msg) and isinstance(name := delegate.get("name"), str):
                target = (delegate.get("namespace") or ns, name)
                found = self.virtual_services.get(target)
                if found is None:
                    _warn(r, rule.at("delegate"), f"delegate VirtualService {target[0]}/{target[1]} is not defined")
                elif found.get("hosts"):
                    _warn(r, rule.at("delegate"), f"VirtualService {target[0]}/{target[1]} has hosts, so it is not a "
                                                "delegate and is not used here")
                else:
                    leaves = [m for m in found.get("http") or [] if isinstance(m, Msg)]
                    for n in merge_http_routes(rule, leaves)[1]:
                        _warn(r, rule.at("delegate"), f"rule {n} of delegate {target[0]}/{target[1]} matches nothing "
                                                    "this rule's match allows; Istio ignores it")

    @staticmethod
    def _gateway_key(gateway: str, ns: str) -> tuple[str, str] | None:
        if "/" in gateway:
            namespace, name = gateway.split("/", 1)
            return (ns if namespace == "." else namespace, name)
        if "." in gateway:  # legacy name.namespace.svc.cluster.local
            parts = gateway.split(".")
            return (parts[1], parts[0])
        return (ns, gateway)

    @staticmethod
    def _destinations(vs: Msg) -> list[Msg]:
        out: list[Msg] = []
        for kind in ("http", "tcp", "tls"):
            for rule in _msgs(vs.get(kind)):
                out += [d["destination"] for d in _msgs(rule.get("route")) if isinstance(d.get("destination"), Msg)]
                if kind == "http":
                    if isinstance(rule.get("mirror"), Msg):
                        out.append(rule["mirror"])
                    out += [m["destination"] for m in _msgs(rule.get("mirrors"))
                            if isinstance(m.get("destination"), Msg)]
        return out

    def _selected_workloads(self, r: Report, se: Msg, ns: str) -> None:
        selector = se.get("workloadSelector")
        if se.get("resolution", "NONE") == "NONE" or not isinstance(selector, Msg):
            return
        labels = selector.get("labels") or {}
        if not any(we_ns == ns and all(we_labels.get(k) == v for k, v in labels.items())
                   for we_ns, we_labels in self.workload_entries):
            _warn(r, se.at("workloadSelector"), f"no WorkloadEntry in namespace {ns} matches this workloadSelector: "
                                              "the service has no endpoints (requests will get 503 UH)")

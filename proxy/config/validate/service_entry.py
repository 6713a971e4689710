"""ServiceEntry rules (hosts, addresses, ports, resolution, endpoints) and WorkloadEntry rules, which
are those of a ServiceEntry endpoint without the service's ports."""

from __future__ import annotations

from proxy.config.hosts import check_fqdn, check_partial_wildcard, check_wildcard_domain, is_dns1123_label, is_ip
from proxy.config.load import RawObject
from proxy.config.schema import Msg, Report
from proxy.config.validate.common import (
    _HTTP_PROTOCOLS,
    _TLS_PROTOCOLS,
    UNIX_PREFIX,
    _export_to,
    _ip_subnet_problem,
    _labels,
    _msgs,
    _port,
    _protocol,
    _selector_labels,
    _unix_address_problem,
)


def _service_entry(r: Report, se: Msg, obj: RawObject) -> None:
    selector = se.get("workloadSelector")
    if isinstance(selector, Msg):
        _selector_labels(r, selector, "labels", "service entry: workload selector specified without labels, will "
                                                "be applied to all services in namespace")
    if se.has("workloadSelector") and se.get("endpoints"):
        r.error(se.at("endpoints"), "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    hosts = list(se.get("hosts") or [])
    if not hosts and "hosts" not in se.bad:
        r.error(se.at("hosts"), "service entry must have at least one host")
    for k, host in enumerate(hosts):
        if not isinstance(host, str):
            continue
        if host == "*":
            r.error(se.at("hosts", k), "invalid host *")
        elif problem := check_wildcard_domain(host):
            r.error(se.at("hosts", k), problem)
        elif se.get("resolution", "NONE") != "DYNAMIC_DNS" and (problem := check_partial_wildcard(host)):
            r.warn(se.at("hosts", k), problem)
    resolution = se.get("resolution", "NONE")
    cidr = False
    for k, address in enumerate(se.get("addresses") or []):
        if isinstance(address, str):
            cidr = cidr or "/" in address
            if problem := _ip_subnet_problem(address):
                r.error(se.at("addresses", k), problem)
    if cidr and resolution not in ("NONE", "STATIC"):
        r.error(se.at("addresses"), "CIDR addresses are allowed only for NONE/STATIC resolution types")
    port_names: set[str] = set()
    port_numbers: set[int] = set()
    ports = _msgs(se.get("ports"))
    auto_allocated = _auto_allocates_ip(se, obj, resolution)
    for k, port in enumerate(se.get("ports") or []):
        if not isinstance(port, Msg):
            continue
        if not se.get("addresses") and not auto_allocated and port.get("protocol", "") in ("", "TCP"):
            r.warn(se.at("ports", k), "addresses are required for ports serving TCP (or unset) protocol when IP "
                                      "Autoallocation is not enabled")
        name, number = port.get("name", ""), port.get("number", 0)
        if name in port_names and "name" not in port.bad:
            r.error(port.at("name"), f"service entry port name {name!r} already defined")
        if number in port_numbers and "number" not in port.bad:
            r.error(port.at("number"), f"service entry port {number} already defined")
        port_names.add(name)
        port_numbers.add(number)
        if port.get("targetPort"):
            _port(r, port.at("targetPort"), port["targetPort"])
        if "name" not in port.bad and not is_dns1123_label(name):
            r.error(port.at("name"), f"invalid port name: {name}")
        protocol = port.get("protocol", "")
        if protocol and _protocol(protocol) is None:
            r.error(port.at("protocol"), f"unsupported protocol: {protocol}")
        if "number" not in port.bad:
            _port(r, port.at("number"), number)
    endpoints = se.get("endpoints") or []
    if resolution == "NONE":
        if endpoints:
            r.error(se.at("endpoints"), "no endpoints should be provided for resolution type none")
        if se.has("workloadSelector"):
            r.warn(se.at("workloadSelector"), "workloadSelector should not be set when resolution mode is NONE")
    elif resolution == "STATIC":
        for endpoint in _msgs(endpoints):
            _workload_entry(r, endpoint, port_names, allow_fqdn=False)
        if not endpoints and not se.has("workloadSelector") and "endpoints" not in se.bad:
            r.warn(se.at("endpoints"), "service has no endpoints (resolution STATIC without endpoints or "
                                       "workloadSelector): requests to it will get 503 UH")
    elif resolution == "DYNAMIC_DNS":
        _dynamic_dns(r, se, hosts, ports)
    else:  # DNS, DNS_ROUND_ROBIN
        if not endpoints:
            for k, host in enumerate(hosts):
                if isinstance(host, str) and (problem := check_fqdn(host)):
                    r.error(se.at("hosts", k), f"hosts must be FQDN or contain only prefix wildcards if no endpoints "
                                               f"are provided for resolution mode {resolution}, {problem}")
                    break
        if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            r.error(se.at("endpoints"), f"there must only be 0 or 1 endpoint for resolution mode {resolution}")
        for endpoint in _msgs(endpoints):
            _workload_entry(r, endpoint, port_names, allow_fqdn=True)
        if se.get("addresses") and len(hosts) > 1:
            for port in ports:
                if _protocol(port.get("protocol", "")) in ("TCP", "MONGO", "REDIS", "MYSQL", "HTTPS", "TLS"):
                    r.warn(se.at("hosts"), "service entry can not have more than one host specified simultaneously "
                                           "with address and tcp port")
                    break
    if resolution != "NONE" and len(hosts) > 1:
        for port in ports:
            protocol = _protocol(port.get("protocol", ""))
            if protocol not in _HTTP_PROTOCOLS and protocol not in _TLS_PROTOCOLS:
                r.error(port.at("protocol"), "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    _export_to(r, se, obj.namespace, service_entry=True)


_DYNAMIC_DNS_PROTOCOLS = {"HTTP", "TLS", "GRPC", "HTTP2"}


def _dynamic_dns(r: Report, se: Msg, hosts: list, ports: list[Msg]) -> None:
    """Istio's DYNAMIC_DNS rules: wildcard hosts resolved per request, so no addresses and no endpoints."""
    for k, host in enumerate(hosts):
        if isinstance(host, str) and not host.startswith("*"):
            r.error(se.at("hosts", k), "host must be wildcarded for resolution mode DYNAMIC_DNS")
    if se.get("addresses"):
        r.error(se.at("addresses"), "addresses cannot be set for resolution type DYNAMIC_DNS. HTTP route domains will "
                                    "only be generated from the hosts field values")
    if se.get("endpoints"):
        r.error(se.at("endpoints"), "endpoints cannot be set for resolution type DYNAMIC_DNS. Destination IP address "
                                    "determined from hosts field values")
    for port in ports:
        if _protocol(port.get("protocol", "")) not in _DYNAMIC_DNS_PROTOCOLS:
            r.error(port.at("protocol"), "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type "
                                         "DYNAMIC_DNS")


def _auto_allocates_ip(se: Msg, obj: RawObject, resolution: str) -> bool:
    """istiod assigns a VIP (so TCP can be told apart) unless resolution is NONE, addresses are given, or the
    object opts out with the networking.istio.io/enable-autoallocate-ip label."""
    metadata = obj.body.get("metadata")
    labels = (metadata.get("labels") if isinstance(metadata, dict) else None) or {}
    opt_out = str(labels.get("networking.istio.io/enable-autoallocate-ip", "")).lower() == "false"
    return resolution != "NONE" and not opt_out and not se.get("addresses")


def _workload_entry(r: Report, we: Msg, service_ports: set[str] | None, allow_fqdn: bool) -> None:
    address = we.get("address", "")
    if not address and "address" not in we.bad:
        if not we.get("network"):
            r.error(we.at("address"), "address is required")
            return
        r.warn(we.at("address"), f"address is unset with network {we['network']!r}")
    unix = address.startswith(UNIX_PREFIX)
    if unix:
        if problem := _unix_address_problem(address[len(UNIX_PREFIX):]):
            r.error(we.at("address"), problem)
        if we.get("ports"):
            r.error(we.at("ports"), f"unix endpoint {address} must not include ports")
    elif address and not is_ip(address):
        if not allow_fqdn:
            r.error(we.at("address"), f"endpoint address {address!r} is not a valid IP address (resolution STATIC "
                                      "takes IP addresses or unix:// paths)")
        elif check_fqdn(address):
            r.error(we.at("address"), f"endpoint address {address!r} is not a valid FQDN or an IP address")
    for name, number in (we.get("ports") or {}).items():
        if service_ports is not None and name not in service_ports:
            defined = ", ".join(sorted(service_ports)) or "none"
            r.error(we.at("ports", name), f"endpoint port {name!r} is not defined by the service entry "
                                          f"(its ports: {defined})")
        if not is_dns1123_label(name):
            r.error(we.at("ports", name), f"invalid port name: {name}")
        _port(r, we.at("ports", name), number)
    _labels(r, we, "labels")
    if unix and service_ports is not None and len(service_ports) != 1:
        r.error(we.at("address"), "exactly 1 service port required for unix endpoints")


def _standalone_workload_entry(r: Report, we: Msg, obj: RawObject) -> None:
    _workload_entry(r, we, None, allow_fqdn=True)

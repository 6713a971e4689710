"""DestinationRule rules: host, subsets, and traffic policies (load balancer, connection pool, outlier
detection, client TLS, tunnel, per-port settings)."""

from __future__ import annotations

from typing import Any

from proxy.config.hosts import check_fqdn, check_wildcard_domain, is_ip
from proxy.config.load import RawObject
from proxy.config.schema import Msg, Report
from proxy.config.validate.common import (
    _duration,
    _export_to,
    _labels,
    _msgs,
    _percent_0_100,
    _percentage,
    _port,
    _port_problem,
    _selector_labels,
    _subset_name_problem,
)

_TOPOLOGY_LABELS = {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}


def _destination_rule(r: Report, dr: Msg, obj: RawObject) -> None:
    host = dr.get("host")
    if not dr.has("host") or host == "":
        r.error(dr.at("host"), "host is required")
    elif isinstance(host, str) and (problem := check_wildcard_domain(host)):
        r.error(dr.at("host"), problem)
    _traffic_policy(r, dr.get("trafficPolicy"))
    names: set[str] = set()
    for subset in _msgs(dr.get("subsets")):
        name = subset.get("name", "")
        if "name" in subset.bad:
            continue
        if name in names:
            r.error(subset.at("name"), f"duplicate subset names: {name}")
        names.add(name)
        if problem := _subset_name_problem(name):
            r.error(subset.at("name"), problem)
        _labels(r, subset, "labels")
        _traffic_policy(r, subset.get("trafficPolicy"))
    selector = dr.get("workloadSelector")
    _export_to(r, dr, obj.namespace, with_selector=isinstance(selector, Msg))
    if isinstance(selector, Msg):
        _selector_labels(r, selector, "matchLabels", "workload selector specified without labels")
        if "matchLabels" not in selector:
            r.warn(selector.path, "workload selector specified without labels")


_POLICY_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls", "portLevelSettings", "tunnel",
                  "proxyProtocol", "retryBudget")


def _set(m: Msg, name: str) -> bool:
    """Set as proto sees it: an empty list is the same as no list."""
    return name in m.bad or (name in m and m[name] != [])


def _traffic_policy(r: Report, policy: Any) -> None:
    if not isinstance(policy, Msg):
        return
    if not any(_set(policy, f) for f in _POLICY_FIELDS):
        r.error(policy.path, "traffic policy must have at least one field")
        return
    if policy.has("tunnel") and policy.has("proxyProtocol"):
        r.error(policy.at("proxyProtocol"), "tunnel and proxyProtocol must not be set together")
        return
    _port_policy(r, policy)
    for k, port_policy in enumerate(policy.get("portLevelSettings") or []):
        if not isinstance(port_policy, Msg):
            continue
        if not port_policy.has("port"):
            r.error(port_policy.at("port"), "portTrafficPolicy must have valid port")
        elif isinstance(port := port_policy.get("port"), Msg):
            _port(r, port.at("number"), port.get("number", 0))
        if not any(port_policy.has(f) for f in ("loadBalancer", "connectionPool", "outlierDetection", "tls")):
            r.error(policy.at("portLevelSettings", k), "port traffic policy must have at least one field")
        else:
            _port_policy(r, port_policy)
    _tunnel(r, policy.get("tunnel"))
    budget = policy.get("retryBudget")
    if isinstance(budget, Msg):
        _percentage(r, budget, "percent")


def _port_policy(r: Report, policy: Msg) -> None:
    """The four fields a TrafficPolicy shares with its per-port settings."""
    outlier = policy.get("outlierDetection")
    _outlier_detection(r, outlier)
    _connection_pool(r, policy.get("connectionPool"))
    _load_balancer(r, policy.get("loadBalancer"), isinstance(outlier, Msg))
    _client_tls(r, policy.get("tls"))


def _tunnel(r: Report, tunnel: Any) -> None:
    if not isinstance(tunnel, Msg):
        return
    if tunnel.get("protocol") not in (None, "", "CONNECT", "POST"):
        r.error(tunnel.at("protocol"), 'tunnel protocol must be "CONNECT" or "POST"')
    target = tunnel.get("targetHost", "")
    if (fqdn_problem := check_fqdn(target)) and not is_ip(target):
        r.error(tunnel.at("targetHost"), f"tunnel target host must be valid FQDN or IP address: {fqdn_problem}")
    if problem := _port_problem(tunnel.get("targetPort", 0)):
        r.error(tunnel.at("targetPort"), f"tunnel target port is invalid: {problem}")


def _outlier_detection(r: Report, outlier: Any) -> None:
    if not isinstance(outlier, Msg):
        return
    _duration(r, outlier, "baseEjectionTime")
    _duration(r, outlier, "interval")
    if outlier.get("consecutiveErrors"):
        r.warn(outlier.at("consecutiveErrors"), "outlier detection consecutive errors is deprecated, use "
                                                "consecutiveGatewayErrors or consecutive5xxErrors instead")
    if not outlier.get("splitExternalLocalOriginErrors") and outlier.get("consecutiveLocalOriginFailures", 0) > 0:
        r.error(outlier.at("consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local "
                "origin errors is set to false")
    _percent_0_100(r, outlier, "maxEjectionPercent")
    _percent_0_100(r, outlier, "minHealthPercent")


def _connection_pool(r: Report, pool: Any) -> None:
    if not isinstance(pool, Msg):
        return
    if not pool.has("http") and not pool.has("tcp"):
        r.error(pool.path, "connection pool must have at least one field")
        return
    http = pool.get("http")
    if isinstance(http, Msg):
        for field, what in (("http1MaxPendingRequests", "http1 max pending requests"),
                            ("http2MaxRequests", "http2 max requests"),
                            ("maxRequestsPerConnection", "max requests per connection"),
                            ("maxRetries", "max retries"), ("maxConcurrentStreams", "max concurrent streams")):
            if http.get(field, 0) < 0:
                r.error(http.at(field), f"{what} must be non-negative")
        _duration(r, http, "idleTimeout")
        if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
            r.error(http.at("useClientProtocol"), "use client protocol must not be true when H2UpgradePolicy is "
                                                  "UPGRADE")
        keepalive = http.get("http2KeepAlive")
        if isinstance(keepalive, Msg):
            for field in ("interval", "timeout"):
                if not keepalive.has(field):
                    r.error(keepalive.at(field), f"http2 keepalive {field} is required")
                else:
                    _duration(r, keepalive, field)
    tcp = pool.get("tcp")
    if isinstance(tcp, Msg):
        if tcp.get("maxConnections", 0) < 0:
            r.error(tcp.at("maxConnections"), "max connections must be non-negative")
        _duration(r, tcp, "connectTimeout")
        _duration(r, tcp, "maxConnectionDuration")
        _duration(r, tcp, "idleTimeout", zero_disables=True)
        keepalive = tcp.get("tcpKeepalive")
        if isinstance(keepalive, Msg):
            _duration(r, keepalive, "time")
            _duration(r, keepalive, "interval")


def _is_prime(x: int) -> bool:
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    return all(x % f for f in range(3, int(x**0.5) + 1, 2))


def _load_balancer(r: Report, lb: Any, has_outlier: bool) -> None:
    if not isinstance(lb, Msg):
        return
    ch = lb.get("consistentHash")
    if isinstance(ch, Msg):
        cookie = ch.get("httpCookie")
        if isinstance(cookie, Msg) and not cookie.get("name"):
            r.error(cookie.at("name"), "name required for HttpCookie")
        if isinstance(cookie, Msg):
            _cookie_attributes(r, cookie)
        if ch.get("minimumRingSize"):
            r.warn(ch.at("minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's "
                                             "RingHash configuration instead")
            if ch.has("ringHash") or ch.has("maglev"):
                r.error(ch.at("minimumRingSize"), "only one of MinimumRingSize or Maglev/Ringhash can be specified")
        maglev = ch.get("maglev")
        if isinstance(maglev, Msg) and "tableSize" not in maglev.bad:
            size = maglev.get("tableSize", 0)
            if size == 0:
                r.error(maglev.at("tableSize"), "tableSize must be set for maglev")
            elif size >= 5000011:
                r.error(maglev.at("tableSize"), "tableSize must be less than 5000011 for maglev")
            elif not _is_prime(size):
                r.error(maglev.at("tableSize"), "tableSize must be a prime number for maglev")
    if lb.has("localityLbSetting") and lb.has("zoneAwareLbSetting"):
        r.error(lb.at("zoneAwareLbSetting"), "only one of localityLbSetting and zoneAwareLbSetting can be set")
    _locality_lb(r, lb.get("localityLbSetting"), has_outlier)
    _zone_aware_lb(r, lb.get("zoneAwareLbSetting"), has_outlier)
    warmup = lb.get("warmup")
    if isinstance(warmup, Msg):
        if not warmup.has("duration"):
            r.error(warmup.at("duration"), "duration is required")
        _duration(r, warmup, "duration")
        if warmup.get("minimumPercent", 0) > 100:
            r.error(warmup.at("minimumPercent"), "minimumPercent value should be less than or equal to 100")
        if "aggression" in warmup and warmup["aggression"] <= 0:  # Envoy: any positive value
            r.error(warmup.at("aggression"), "aggression should be greater than 0")


def _cookie_attributes(r: Report, cookie: Msg) -> None:
    names: set[str] = set()
    for attribute in _msgs(cookie.get("attributes")):
        name = attribute.get("name", "")
        if "name" in attribute.bad:
            continue
        if name == "":
            r.error(attribute.at("name"), "cookie attribute name cannot be empty")
        elif name in names:
            r.error(attribute.at("name"), f"duplicate cookie attribute name: {name}")
        names.add(name)


def _zone_aware_lb(r: Report, setting: Any, has_outlier: bool) -> None:
    """agent.ValidateZoneAwareLbSetting."""
    if not isinstance(setting, Msg):
        return
    for k, label in enumerate(setting.get("failoverPriority") or []):
        if label in _TOPOLOGY_LABELS:
            r.error(setting.at("failoverPriority", k), f"'failover_priority' for zone aware lb must not use topology "
                                                       f"label '{label}'; region- and zone-level routing are handled "
                                                       "automatically")
    if (setting.get("failover") or setting.get("failoverPriority")) and not has_outlier:
        r.warn(setting.path, "outlier detection policy must be provided for failover")
    for rule in _msgs(setting.get("failover")):
        source, target = rule.get("from", ""), rule.get("to", "")
        if source == target:
            r.error(rule.path, "zone aware lb failover settings must specify different regions")
        if "/" in source or "/" in target:
            r.error(rule.path, "zone aware lb failover only specifies region; zone and subzone failover are handled "
                               "automatically")
        if "*" in source or "*" in target:
            r.error(rule.path, "zone aware lb failover region should not contain '*' wildcard")


def _locality_lb(r: Report, setting: Any, has_outlier: bool) -> None:
    if not isinstance(setting, Msg):
        return
    distribute, failover = setting.get("distribute") or [], setting.get("failover") or []
    if distribute and failover:
        r.error(setting.path, "can not simultaneously specify 'distribute' and 'failover'")
        return
    priority = setting.get("failoverPriority") or []
    if failover and any(p in _TOPOLOGY_LABELS for p in priority):
        r.error(setting.at("failoverPriority"), "can not simultaneously set 'failover' and topology label in "
                                                "'failover_priority'")
    for rule in _msgs(distribute):
        weights = rule.get("to") or {}
        if any(not 1 <= w <= 100 for w in weights.values()):
            r.error(rule.at("to"), "locality weight must be in range [1, 100]")
        elif sum(weights.values()) != 100:
            r.error(rule.at("to"), f"total locality weight {sum(weights.values())} != 100")
    if (failover or priority) and not has_outlier:
        r.warn(setting.path, "outlier detection policy must be provided for failover")
    for rule in _msgs(failover):
        source, target = rule.get("from", ""), rule.get("to", "")
        if source == target:
            r.error(rule.path, "locality lb failover settings must specify different regions")
        if "/" in source or "/" in target:
            r.error(rule.path, "locality lb failover only specify region")
        if "*" in source or "*" in target:
            r.error(rule.path, "locality lb failover region should not contain '*' wildcard")


def _client_tls(r: Report, tls: Any) -> None:
    if not isinstance(tls, Msg):
        return
    mode = tls.get("mode", "DISABLE")
    if tls.get("insecureSkipVerify"):
        if mode == "SIMPLE" and (tls.get("caCertificates") or tls.get("credentialName") or
                                 tls.has("subjectAltNames")):
            r.error(tls.at("insecureSkipVerify"), "cannot specify CaCertificates or CredentialName or "
                                                  "SubjectAltNames when InsecureSkipVerify is set true")
        if mode == "MUTUAL" and (tls.get("caCertificates") or tls.has("subjectAltNames")):
            r.error(tls.at("insecureSkipVerify"), "cannot specify CaCertificates or SubjectAltNames when "
                                                  "InsecureSkipVerify is set true")
    if mode in ("SIMPLE", "MUTUAL") and tls.get("credentialName"):
        if any(tls.get(f) for f in ("clientCertificate", "caCertificates", "privateKey", "caCrl")):
            r.error(tls.at("credentialName"), "cannot specify client certificates or CA certificate or CA CRL If "
                                              "credentialName is set")
        return
    if mode == "MUTUAL":
        if not tls.get("clientCertificate"):
            r.error(tls.at("clientCertificate"), "client certificate required for mutual tls")
        if not tls.get("privateKey"):
            r.error(tls.at("privateKey"), "private key required for mutual tls")

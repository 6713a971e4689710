"""Cases where validation once disagreed with Istio's (istio/istio pkg/config/validation, and istio/api for
the fields): a null match block, incomplete http2KeepAlive, cookie attribute names, zoneAwareLbSetting, the
missing-addresses warning of a ServiceEntry, and the line a diagnostic points at."""

from __future__ import annotations

import pytest

from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.load import load_text
from tests.config.test_validate import dr, run, se, vs


def paths(diagnostics: list) -> list[tuple[str, str]]:
    return [(d.path, d.reason) for d in diagnostics]


def test_a_null_http_match_block_matches_everything() -> None:
    text = vs("hosts: [reviews]\nhttp:\n- match: [null]\n  route: [{destination: {host: reviews}}]")
    errors, _ = run(text)
    assert errors == []
    snap = compile_snapshot(load_text(text, "vs.yaml").objects, CompileOptions())
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None and vh.routes[0].matches == ()  # no condition: every request


def test_a_null_tcp_match_block_is_still_an_error() -> None:
    errors, _ = run(vs("hosts: [tcp-echo]\ntcp:\n- match: [null]\n  route: [{destination: {host: tcp-echo}}]"))
    assert paths(errors) == [("spec.tcp[0].match[0]", "list item may not be null")]


KEEPALIVE = "host: reviews\ntrafficPolicy:\n  connectionPool:\n    http:\n      http2KeepAlive: {}"


@pytest.mark.parametrize(("keepalive", "expected"), [
    ("{interval: 10s, timeout: 3s}", []),
    ("{interval: 10s}", [("spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
                          "http2 keepalive timeout is required")]),
    ("{}", [("spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval", "http2 keepalive interval is required"),
            ("spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout", "http2 keepalive timeout is required")]),
    ("{interval: 10s, timeout: 0.5ms}", [("spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
                                          "duration must be at least 1ms")]),
    ("{interval: 10s, timeout: 3s, extra: 1}", [("spec.trafficPolicy.connectionPool.http.http2KeepAlive.extra",
                                                 'unknown field "extra"')]),
])
def test_http2_keepalive_needs_interval_and_timeout(keepalive: str, expected: list[tuple[str, str]]) -> None:
    errors, _ = run(dr(KEEPALIVE.replace("{}", keepalive)))
    assert [(p, r[:len(expected[i][1])]) for i, (p, r) in enumerate(paths(errors))] == expected


@pytest.mark.parametrize(("attributes", "expected"), [
    ("[{name: SameSite, value: Strict}, {name: Secure}]", []),
    ("[{name: Secure}, {name: Secure}]", [("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1]"
                                           ".name", "duplicate cookie attribute name: Secure")]),
    ("[{value: x}]", [("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0].name",
                       "cookie attribute name cannot be empty")]),
])
def test_cookie_attribute_names_are_unique_and_set(attributes: str, expected: list[tuple[str, str]]) -> None:
    errors, _ = run(dr(f"host: reviews\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n"
                       f"      httpCookie: {{name: user, ttl: 0s, attributes: {attributes}}}"))
    assert paths(errors) == expected


@pytest.mark.parametrize(("lb", "expected"), [
    ("zoneAwareLbSetting: {enabled: true, minClusterSize: 3}", []),
    ("zone_aware_lb_setting: {failover: [{from: us-east, to: us-west}]}", []),
    ("zoneAwareLbSetting: {enabled: true}\n    localityLbSetting: {enabled: true}",
     [("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
       "only one of localityLbSetting and zoneAwareLbSetting can be set")]),
    ("zoneAwareLbSetting: {failoverPriority: [topology.kubernetes.io/zone]}",
     [("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failoverPriority[0]",
       "'failover_priority' for zone aware lb must not use topology label 'topology.kubernetes.io/zone'; region- and "
       "zone-level routing are handled automatically")]),
    ("zoneAwareLbSetting: {failover: [{from: us-east, to: us-east}]}",
     [("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failover[0]",
       "zone aware lb failover settings must specify different regions")]),
])
def test_zone_aware_lb_setting_is_known(lb: str, expected: list[tuple[str, str]]) -> None:
    errors, _ = run(dr(f"host: reviews\ntrafficPolicy:\n  outlierDetection: {{consecutive5xxErrors: 5}}\n"
                       f"  loadBalancer:\n    {lb}"))
    assert paths(errors) == expected


ADDRESS_WARNING = ("addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not "
                   "enabled")


@pytest.mark.parametrize(("spec", "warned"), [
    ("resolution: NONE\nports: [{number: 3306, name: tcp, protocol: TCP}]", ["spec.ports[0]"]),
    ("resolution: NONE\nports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: other}]",
     ["spec.ports[1]"]),  # unset protocol counts as TCP
    ("resolution: NONE\naddresses: [10.0.0.1]\nports: [{number: 3306, name: tcp, protocol: TCP}]", []),
    ("resolution: DNS\nports: [{number: 3306, name: tcp, protocol: TCP}]", []),  # istiod allocates a VIP
])
def test_service_entry_without_addresses_warns_as_istio(spec: str, warned: list[str]) -> None:
    errors, warnings = run(se("hosts: [db.example.com]\n" + spec))
    assert errors == []
    assert [w.path for w in warnings if w.reason == ADDRESS_WARNING] == warned


def test_opting_out_of_ip_autoallocation_brings_the_warning_back() -> None:
    text = se("hosts: [db.example.com]\nresolution: DNS\nports: [{number: 3306, name: tcp, protocol: TCP}]")
    text = text.replace("metadata:\n", "metadata:\n  labels: {networking.istio.io/enable-autoallocate-ip: 'false'}\n")
    _, warnings = run(text)
    assert [w.path for w in warnings if w.reason == ADDRESS_WARNING] == ["spec.ports[0]"]


@pytest.mark.parametrize("text", [
    # each error is on a key whose value is a block mapping or a block list: the diagnostic names the key's line
    vs("hosts: [reviews]\nhttp:\n- route:  # <-\n  - destination: {host: reviews}\n    weight: 0\n"
       "  - destination: {host: reviews}\n"),  # total destination weight = 0
    dr("host: reviews\ntrafficPolicy:\n  connectionPool:\n    http:\n      http2KeepAlive:  # <-\n"
       "        interval: 1s"),  # timeout is required
    dr("host: reviews\ntrafficPolicy:\n  connectionPool:  # <-\n    http: null"),  # must have at least one field
    se("hosts: [a.example.com]\nresolution: NONE\nendpoints:  # <-\n- address: 10.0.0.1"),  # none for NONE
])
def test_diagnostics_on_a_block_valued_key_point_at_the_key(text: str) -> None:
    errors, _ = run(text)
    marked = next(n for n, line in enumerate(text.splitlines(), 1) if line.endswith("# <-"))
    assert errors and errors[0].line == marked, [str(e) for e in errors]


RULE = "hosts: [reviews]\nhttp:\n- match: [{MATCH}]\n  route: [{destination: {host: reviews}}]"


@pytest.mark.parametrize(("match", "expected"), [
    ('withoutHeaders: {x-a: {regex: "*"}}', []),  # Istio: `*` here means "present"
    ('withoutHeaders: {x-a: {regex: "a**"}}', [("spec.http[0].match[0].withoutHeaders.x-a.regex",
                                                 "invalid regex 'a**': bad repetition operator: **")]),
    ('headers: {x-a: {regex: "(?<v>v[[:digit:]]+)"}}', []),  # RE2-only spellings are valid
    ('queryParams: {q: {regex: "a(?=b)"}}', [("spec.http[0].match[0].queryParams.q.regex",
                                              "invalid regex 'a(?=b)': invalid perl operator: (?= (lookaround")]),
    ('uri: {regex: "\\\\pL+"}', []),
])
def test_regexes_are_checked_by_re2_at_their_path(match: str, expected: list[tuple[str, str]]) -> None:
    errors, _ = run(vs(RULE.replace("MATCH", match)))
    assert [(p, r[:len(expected[i][1])]) for i, (p, r) in enumerate(paths(errors))] == expected


@pytest.mark.parametrize(("regex_rewrite", "error", "warning"), [
    ('{match: "(?<x>a)", rewrite: "\\\\1b"}', None, None),
    ('{match: "*", rewrite: "x"}', "spec.http[0].rewrite.uriRegexRewrite.match", None),
    ('{match: "(a)", rewrite: "\\\\2"}', None, "spec.http[0].rewrite.uriRegexRewrite.rewrite"),
])
def test_uri_regex_rewrite(regex_rewrite: str, error: str | None, warning: str | None) -> None:
    text = vs("hosts: [reviews]\nhttp:\n- rewrite: {uriRegexRewrite: " + regex_rewrite + "}\n"
              "  route: [{destination: {host: reviews}}]")
    errors, warnings = run(text)
    assert [e.path for e in errors] == ([error] if error else [])
    assert [w.path for w in warnings if "RE2" in w.reason] == ([warning] if warning else [])


@pytest.mark.parametrize(("spec", "expected"), [
    ("hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\nports: [{number: 80, name: http, protocol: HTTP}]", []),
    ("hosts: [api.example.com]\nresolution: DYNAMIC_DNS\nports: [{number: 80, name: http, protocol: HTTP}]",
     [("spec.hosts[0]", "host must be wildcarded for resolution mode DYNAMIC_DNS")]),
    ("hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\naddresses: [10.0.0.1]\n"
     "ports: [{number: 5432, name: db, protocol: TCP}]",
     [("spec.addresses", "addresses cannot be set for resolution type DYNAMIC_DNS"),
      ("spec.ports[0].protocol", "only HTTP, TLS, GRPC, and HTTP2 protocols are supported")]),
])
def test_dynamic_dns_service_entries(spec: str, expected: list[tuple[str, str]]) -> None:
    errors, _ = run(se(spec))
    assert [(p, r[:len(expected[i][1])]) for i, (p, r) in enumerate(paths(errors))] == expected


@pytest.mark.parametrize(("aggression", "ok"), [("0.5", True), ("1", True), ("0", False), ("-1", False)])
def test_warmup_aggression_is_any_positive_number(aggression: str, ok: bool) -> None:
    errors, _ = run(dr(f"host: reviews\ntrafficPolicy:\n  loadBalancer:\n    warmup: {{duration: 10s, aggression: "
                       f"{aggression}}}"))
    assert paths(errors) == ([] if ok else [("spec.trafficPolicy.loadBalancer.warmup.aggression",
                                             "aggression should be greater than 0")])

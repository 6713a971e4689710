"""Istio validation rules, table-driven: each case is a small YAML document and the exact diagnostics
(YAML path + a distinctive phrase of the reason) it must produce. Rules and wording follow Istio's
webhook / `istioctl validate` (istio/istio pkg/config/validation) and the networking API docs."""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field

import pytest

from proxy.config.duration import parse_duration
from proxy.config.hosts import fqdn, host_matches, host_subset_of
from proxy.config.load import load_text
from proxy.config.validate import canonical_spec, validate
from proxy.routing.regex import compile_regex


def doc(kind: str, spec: str, name: str = "reviews", namespace: str = "") -> str:
    meta = f"  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return f"apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n{meta}spec:\n{body}\n"


def vs(spec: str, name: str = "reviews") -> str:
    return doc("VirtualService", spec, name)


def dr(spec: str, name: str = "reviews") -> str:
    return doc("DestinationRule", spec, name)


def gw(spec: str, name: str = "gw") -> str:
    return doc("Gateway", spec, name)


def se(spec: str, name: str = "svc") -> str:
    return doc("ServiceEntry", spec, name)


def we(spec: str, name: str = "we") -> str:
    return doc("WorkloadEntry", spec, name)


def run(text: str) -> tuple[list, list]:
    loaded = load_text(text, "case.yaml")
    assert loaded.errors == [], loaded.errors
    assert loaded.objects, "the case must contain an Istio object"
    return validate(loaded.objects)


# A VirtualService routing `reviews` 50/50; most cases vary one piece of it.
ROUTE_50_50 = """
hosts: [reviews]
http:
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
  - destination: {host: reviews, subset: v3}
    weight: 50
"""


def http_rule(rule: str, hosts: str = "[reviews]") -> str:
    """A VirtualService whose only HTTP rule is `rule` (YAML for the rule's fields)."""
    return vs(f"hosts: {hosts}\nhttp:\n- " + textwrap.indent(textwrap.dedent(rule).strip("\n"), "  ")[2:])


ONE_DEST = "route:\n- destination: {host: reviews}\n"


@dataclass
class Case:
    id: str
    yaml: str
    errors: list[tuple[str, str]] = field(default_factory=list)  # (exact path, reason phrase); all of them
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (exact path, reason phrase); at least these


VALID = [
    Case("weights-50-50", vs(ROUTE_50_50)),
    Case("weights-relative-not-100", vs(ROUTE_50_50.replace("weight: 50\n  - d", "weight: 550\n  - d"))),
    Case("single-destination-weight-0", http_rule("route:\n- destination: {host: reviews}\n  weight: 0")),
    Case("single-destination-no-weight", http_rule(ONE_DEST)),
    Case("header-present-and-without-star", http_rule(textwrap.dedent("""
        match:
        - headers: {end-user: {}}
          withoutHeaders: {x-canary: {regex: "*"}}
        """) + ONE_DEST)),
    Case("uri-empty-prefix-allowed", http_rule('match: [{uri: {prefix: ""}}]\n' + ONE_DEST)),
    Case("durations-go-syntax", http_rule(textwrap.dedent("""
        timeout: 1h30m
        retries: {attempts: 3, perTryTimeout: 100ms, retryOn: "5xx,connect-failure,503"}
        """) + ONE_DEST)),
    Case("snake-case-field-names", http_rule(textwrap.dedent("""
        retries: {attempts: 2, per_try_timeout: 1.5s, retry_on: gateway-error}
        mirror: {host: reviews-shadow}
        mirror_percentage: {value: 10}
        """) + ONE_DEST)),
    Case("gateway-bound-wildcard-host", vs("""
        hosts: ["*"]
        gateways: [bookinfo-gateway]
        http:
        - route:
          - destination: {host: productpage, port: {number: 9080}}
        """) + "---\n" + gw("""
        selector: {istio: ingressgateway}
        servers:
        - port: {number: 8080, name: http, protocol: HTTP}
          hosts: ["*"]
        """, name="bookinfo-gateway")),
    Case("redirect-and-direct-response", vs("""
        hosts: [reviews]
        http:
        - match: [{uri: {prefix: /old}}]
          redirect: {uri: /new, redirectCode: 302}
        - match: [{uri: {exact: /health}}]
          directResponse: {status: 200, body: {string: ok}}
        - route:
          - destination: {host: reviews}
        """)),
    Case("tcp-route-port-and-subnet", vs("""
        hosts: [tcp-echo]
        tcp:
        - match: [{port: 9000, destinationSubnets: [10.0.0.0/8, 192.168.1.1]}]
          route:
          - destination: {host: tcp-echo, port: {number: 9000}}
        """, name="tcp-echo")),
    Case("tls-route-sni-subset-of-host", vs("""
        hosts: ["*.example.com"]
        gateways: [mesh]
        tls:
        - match: [{sniHosts: [login.example.com], port: 443}]
          route:
          - destination: {host: login.example.com}
        """)),
    Case("delegate-root-and-delegate", vs("""
        hosts: [reviews]
        http:
        - match: [{uri: {prefix: /api}}]
          delegate: {name: reviews-api}
        """) + "---\n" + vs("""
        http:
        - route:
          - destination: {host: reviews}
        """, name="reviews-api")),
    Case("destination-rule-full-policy", dr("""
        host: reviews.default.svc.cluster.local
        trafficPolicy:
          loadBalancer:
            consistentHash: {httpCookie: {name: user, ttl: 0s}, maglev: {tableSize: 65537}}
          connectionPool:
            tcp: {maxConnections: 100, connectTimeout: 30ms, idleTimeout: 0s, tcpKeepalive: {time: 7200s}}
            http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1, idleTimeout: 1h}
          outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 50}
          portLevelSettings:
          - port: {number: 9080}
            loadBalancer: {simple: LEAST_REQUEST}
        subsets:
        - name: v1
          labels: {version: v1}
          trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
        - name: V2-mysql
          labels: {version: v2-mysql}
        """)),
    Case("enum-by-number", dr("host: reviews\ntrafficPolicy: {loadBalancer: {simple: 4}, tls: {mode: 3}}")),
    Case("service-entry-static-and-unix", se("""
        hosts: [reviews.local]
        ports: [{number: 9080, name: http, protocol: HTTP}]
        resolution: STATIC
        endpoints:
        - {address: 127.0.0.1, ports: {http: 9081}, labels: {version: v1}}
        - {address: "unix:///var/run/reviews.sock", labels: {version: v2}}
        """)),
    Case("service-entry-dns-fqdn-endpoints", se("""
        hosts: [api.example.com]
        location: MESH_EXTERNAL
        ports: [{number: 443, name: https, protocol: TLS}]
        resolution: DNS
        endpoints: [{address: us.api.example.com}, {address: 10.1.2.3}]
        """)),
    Case("workload-entry", we("address: 10.0.0.7\nports: {http: 9080}\nlabels: {app: reviews, version: v3}")),
    Case("gateway-https-credential-and-redirect", gw("""
        selector: {istio: ingressgateway}
        servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: [bookinfo.example.com, "prod/*.example.com"]
          tls: {mode: SIMPLE, credentialName: bookinfo-cert}
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: ["*"]
          tls: {httpsRedirect: true}
        """)),
    Case("kubernetes-metadata-fields", """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
  uid: 0b1c2d3e
  resourceVersion: "4711"
  generation: 3
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels: {app: reviews}
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
  managedFields: [{manager: kubectl, operation: Update}]
spec:
  host: reviews
status: {}
"""),
    Case("cors-fault-headers", http_rule(textwrap.dedent("""
        corsPolicy:
          allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\\\.example\\\\.com"}]
          allowMethods: [GET, POST]
          allowHeaders: [x-user]
          maxAge: 24h
        fault:
          delay: {fixedDelay: 7s, percentage: {value: 0.5}}
          abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}
        headers:
          request: {set: {x-version: "%HOSTNAME% 100%%"}, remove: [x-debug]}
          response: {add: {x-served-by: shiftproxy}}
        """) + ONE_DEST)),
    # Istio documents lower-case header keys but accepts any token; Envoy matches names case-insensitively
    Case("header-name-uppercase", http_rule("match: [{headers: {End-User: {exact: jason}}}]\n" + ONE_DEST)),
]

INVALID = [
    # weights and destinations
    Case("negative-weight", vs(ROUTE_50_50.replace("weight: 50\n", "weight: -1\n", 2).replace(
        "weight: -1\n", "weight: 50\n", 1)), [("spec.http[0].route[1].weight", "weight -1 < 0")]),
    Case("total-weight-zero", vs(ROUTE_50_50.replace("weight: 50", "weight: 0")),
         [("spec.http[0].route", "total destination weight = 0")]),
    Case("weights-omitted-on-several", http_rule("route:\n- destination: {host: a}\n- destination: {host: b}"),
         [("spec.http[0].route", "total destination weight = 0")]),
    Case("destination-host-missing", http_rule("route:\n- destination: {subset: v1}"),
         [("spec.http[0].route[0].destination.host", "destination host is required")]),
    Case("destination-missing", http_rule("route:\n- weight: 100"),
         [("spec.http[0].route[0].destination", "destination is required")]),
    Case("destination-host-star", http_rule("route:\n- destination: {host: '*'}"),
         [("spec.http[0].route[0].destination.host", "invalid destination host *")]),
    Case("destination-port-zero", http_rule("route:\n- destination: {host: reviews, port: {number: 0}}"),
         [("spec.http[0].route[0].destination.port.number", "port number 0 must be in the range 1..65535")]),
    Case("destination-subset-not-dns-label", http_rule("route:\n- destination: {host: reviews, subset: v1.0}"),
         [("spec.http[0].route[0].destination.subset", "subset name is invalid: v1.0")]),
    # string matches
    Case("string-match-two-kinds", http_rule("match: [{uri: {exact: /a, prefix: /a}}]\n" + ONE_DEST),
         [("spec.http[0].match[0].uri.prefix", "only one of exact, prefix or regex may be set")]),
    Case("regex-does-not-compile", http_rule('match: [{uri: {regex: "/api/(v1"}}]\n' + ONE_DEST),
         [("spec.http[0].match[0].uri.regex", "invalid regex")]),
    Case("regex-lookahead-not-re2", http_rule('match: [{uri: {regex: "/(?!admin).*"}}]\n' + ONE_DEST),
         [("spec.http[0].match[0].uri.regex", "lookaround")]),
    Case("regex-backreference-not-re2", http_rule('match: [{headers: {x-a: {regex: "(a)\\\\1"}}}]\n' + ONE_DEST),
         [("spec.http[0].match[0].headers.x-a.regex", "backreferences")]),
    Case("regex-star-only-in-without-headers", http_rule('match: [{headers: {x-a: {regex: "*"}}}]\n' + ONE_DEST),
         [("spec.http[0].match[0].headers.x-a.regex", 'means "present" only in withoutHeaders')]),
    Case("header-prefix-empty", http_rule('match: [{headers: {x-a: {prefix: ""}}}]\n' + ONE_DEST),
         [("spec.http[0].match[0].headers.x-a.prefix", "prefix string match should not be empty")]),
    Case("header-match-null", http_rule("match: [{headers: {x-a: null}}]\n" + ONE_DEST),
         [("spec.http[0].match[0].headers.x-a", "may not be null")]),
    Case("source-namespace-invalid", http_rule("match: [{sourceNamespace: Bad_NS}]\n" + ONE_DEST),
         [("spec.http[0].match[0].sourceNamespace", "sourceNamespace match Bad_NS is invalid")]),
    Case("match-port-out-of-range", http_rule("match: [{port: 70000}]\n" + ONE_DEST),
         [("spec.http[0].match[0].port", "port number 70000 must be in the range 1..65535")]),
    # durations
    Case("timeout-zero", http_rule("timeout: 0s\n" + ONE_DEST), [("spec.http[0].timeout", "at least 1ms")]),
    Case("timeout-sub-ms", http_rule("timeout: 1.5ms\n" + ONE_DEST),
         [("spec.http[0].timeout", "only durations to ms precision are supported")]),
    Case("timeout-negative", http_rule("timeout: -1s\n" + ONE_DEST), [("spec.http[0].timeout", "at least 1ms")]),
    Case("timeout-no-unit", http_rule('timeout: "10"\n' + ONE_DEST), [("spec.http[0].timeout", "missing unit")]),
    Case("timeout-day-unit", http_rule("timeout: 1d\n" + ONE_DEST), [("spec.http[0].timeout", "unknown unit 'd'")]),
    Case("timeout-integer", http_rule("timeout: 10\n" + ONE_DEST),
         [("spec.http[0].timeout", 'expected a duration string such as "10s"')]),
    Case("connect-timeout-zero-but-idle-zero-ok",
         dr("host: reviews\ntrafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s, idleTimeout: 0s}}}"),
         [("spec.trafficPolicy.connectionPool.tcp.connectTimeout", "at least 1ms")]),
    # unknown fields and types
    Case("unknown-spec-field", vs(ROUTE_50_50 + "htpp: []\n"),
         [("spec.htpp", 'unknown field "htpp" in VirtualService')]),
    Case("unknown-nested-field-suggests", http_rule("route:\n- destination: {host: reviews, subsets: v1}"),
         [("spec.http[0].route[0].destination.subsets", 'did you mean "subset"')]),
    Case("unknown-metadata-field", vs(ROUTE_50_50).replace("  name: reviews\n", "  name: reviews\n  label: x\n"),
         [("metadata.label", 'unknown field "label" in metadata')]),
    Case("unknown-top-level-field", vs(ROUTE_50_50) + "specs: {}\n", [("specs", 'unknown field "specs"')]),
    Case("same-field-twice-camel-and-snake", vs(ROUTE_50_50 + "exportTo: ['.']\nexport_to: ['*']\n"),
         [("spec.export_to", 'field "exportTo" is set twice')]),
    Case("weight-as-string", vs(ROUTE_50_50.replace("weight: 50", 'weight: "50"', 1)),
         [("spec.http[0].route[0].weight", "expected a 32-bit integer, got string '50'")]),
    Case("route-map-instead-of-list", http_rule("route: {destination: {host: reviews}}"),
         [("spec.http[0].route", "expected a list of HTTPRouteDestination, got a mapping")]),
    Case("hosts-string-instead-of-list", vs(ROUTE_50_50.replace("hosts: [reviews]", "hosts: reviews")),
         [("spec.hosts", "expected a list of strings, got string 'reviews'")]),
    Case("headers-list-instead-of-map", http_rule("match: [{headers: [end-user]}]\n" + ONE_DEST),
         [("spec.http[0].match[0].headers", "expected a mapping of name to StringMatch, got a list")]),
    Case("label-value-boolean", dr("host: reviews\nsubsets: [{name: v1, labels: {canary: yes}}]"),
         [("spec.subsets[0].labels.canary", "expected a string, got boolean true (quote it)")]),
    Case("null-list-item", vs(ROUTE_50_50 + "gateways: [mesh, null]\n"),
         [("spec.gateways[1]", "list item may not be null")]),
    # hosts and gateways
    Case("mesh-wildcard-host", vs(ROUTE_50_50.replace("[reviews]", '["*"]')),
         [("spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh gateway")]),
    Case("mesh-and-gateway-wildcard-host", vs(ROUTE_50_50.replace("[reviews]", '["*"]\ngateways: [gw, mesh]')),
         [("spec.hosts[0]", "wildcard host * is not allowed")]),
    Case("duplicate-overlapping-hosts", vs(ROUTE_50_50.replace("[reviews]", '["*.foo.bar", "*.bar"]')),
         [("spec.hosts[1]", "duplicate hosts in virtual service: *.foo.bar & *.bar")]),
    Case("host-bad-label", vs(ROUTE_50_50.replace("[reviews]", "[reviews..default]")),
         [("spec.hosts[0]", "domain name 'reviews..default' invalid")]),
    Case("gateway-ref-name-wildcard", vs(ROUTE_50_50 + "gateways: [istio-system/*]\n"),
         [("spec.gateways[0]", "invalid value for gateway name: '*'")]),
    Case("gateway-ref-namespace-wildcard", vs(ROUTE_50_50 + "gateways: ['*/bookinfo-gateway']\n"),
         [("spec.gateways[0]", "invalid value for namespace: '*'")]),
    Case("no-routes-at-all", vs("hosts: [reviews]"), [("spec", "http, tcp or tls must be provided")]),
    Case("delegate-with-gateways", vs("gateways: [gw]\nhttp:\n- route:\n  - destination: {host: reviews}"),
         [("spec.gateways", "delegate virtual service must have no gateways specified")]),
    Case("export-to-star-and-namespace", vs(ROUTE_50_50 + "exportTo: ['*', default]\n"),
         [("spec.exportTo", "cannot have both public (*) and non-public exportTo values")]),
    # actions
    Case("rule-without-action", http_rule("match: [{uri: {prefix: /}}]\ntimeout: 1s"),
         [("spec.http[0]", "HTTP route, redirect or direct_response is required")]),
    Case("route-and-redirect", http_rule("redirect: {uri: /x}\n" + ONE_DEST),
         [("spec.http[0].route", "HTTP route cannot contain both route and redirect")]),
    Case("route-and-direct-response", http_rule("directResponse: {status: 503}\n" + ONE_DEST),
         [("spec.http[0].route", "HTTP route cannot contain both route and direct_response")]),
    Case("redirect-empty", http_rule("redirect: {redirectCode: 301}"),
         [("spec.http[0].redirect", "redirect must specify URI")]),
    Case("redirect-code-not-3xx", http_rule("redirect: {uri: /x, redirectCode: 200}"),
         [("spec.http[0].redirect.redirectCode", "200 is not a valid redirect code, must be 3xx")]),
    Case("redirect-scheme-ftp", http_rule("redirect: {scheme: ftp}"),
         [("spec.http[0].redirect.scheme", 'invalid redirect scheme, must be "http" or "https"')]),
    Case("redirect-port-and-derive-port", http_rule("redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}"),
         [("spec.http[0].redirect.derivePort", "only one of port or derivePort may be set")]),
    Case("direct-response-status", http_rule("directResponse: {status: 700}"),
         [("spec.http[0].directResponse.status", "HTTP status 700 is not in range 200-599")]),
    Case("direct-response-status-missing", http_rule("directResponse: {body: {string: hi}}"),
         [("spec.http[0].directResponse.status", "HTTP status 0 is not in range")]),
    Case("rewrite-empty", http_rule("rewrite: {}\n" + ONE_DEST),
         [("spec.http[0].rewrite", "rewrite must specify at least one of URI, UriRegexRewrite, or authority")]),
    Case("rewrite-uri-and-regex", http_rule("rewrite: {uri: /a, uriRegexRewrite: {match: ^/b, rewrite: /c}}\n"
                                            + ONE_DEST),
         [("spec.http[0].rewrite.uriRegexRewrite", "rewrite may only contain one of URI or UriRegexRewrite")]),
    Case("authority-set-twice", http_rule("rewrite: {authority: a.example.com}\n"
                                          "headers: {request: {set: {host: b.example.com}}}\n" + ONE_DEST),
         [("spec.http[0].headers.request.set.host", "authority header cannot be set multiple times")]),
    Case("response-header-host", http_rule("headers: {response: {set: {Host: x}}}\n" + ONE_DEST),
         [("spec.http[0].headers.response.set.Host", "cannot set Host header")]),
    Case("header-value-stray-percent", http_rule("headers: {request: {add: {x-a: 'abc%123'}}}\n" + ONE_DEST),
         [("spec.http[0].headers.request.add.x-a", "a '%' must start a %COMMAND% or be written '%%'")]),
    Case("retries-zero-attempts-with-timeout", http_rule("retries: {attempts: 0, perTryTimeout: 2s}\n" + ONE_DEST),
         [("spec.http[0].retries.attempts", "http retry policy configured when attempts are set to 0")]),
    Case("retries-negative", http_rule("retries: {attempts: -1}\n" + ONE_DEST),
         [("spec.http[0].retries.attempts", "attempts cannot be negative")]),
    Case("retry-on-unknown-policy", http_rule("retries: {attempts: 2, retryOn: \"5xx,flaky\"}\n" + ONE_DEST),
         [("spec.http[0].retries.retryOn", "'flaky' is not a valid retryOn policy")]),
    Case("fault-empty", http_rule("fault: {}\n" + ONE_DEST),
         [("spec.http[0].fault", "HTTP fault injection must have an abort and/or a delay")]),
    Case("fault-percentage-over-100", http_rule("fault: {abort: {httpStatus: 503, percentage: {value: 150}}}\n"
                                                + ONE_DEST),
         [("spec.http[0].fault.abort.percentage.value",
           "percentage 150 is neither 0.0, nor in range [0.0001, 100.0]")]),
    Case("fault-abort-status", http_rule("fault: {abort: {httpStatus: 700, percentage: {value: 1}}}\n" + ONE_DEST),
         [("spec.http[0].fault.abort.httpStatus", "HTTP status 700 is not in range 200-599")]),
    Case("fault-delay-sub-ms", http_rule("fault: {delay: {fixedDelay: 500us, percentage: {value: 1}}}\n" + ONE_DEST),
         [("spec.http[0].fault.delay.fixedDelay", "at least 1ms")]),
    Case("mirror-percentage-over-100", http_rule("mirror: {host: shadow}\nmirrorPercentage: {value: 101}\n"
                                                 + ONE_DEST),
         [("spec.http[0].mirrorPercentage.value", "mirror_percentage must have a max value of 100")]),
    Case("mirror-and-mirrors", http_rule("mirror: {host: a}\nmirrors: [{destination: {host: b}}]\n" + ONE_DEST),
         [("spec.http[0].mirrors", "HTTP route cannot contain both mirror and mirrors")]),
    Case("cors-method", http_rule("corsPolicy: {allowMethods: [GET, FETCH]}\n" + ONE_DEST),
         [("spec.http[0].corsPolicy.allowMethods[1]", '"FETCH" is not a supported HTTP method')]),
    Case("tcp-route-missing", vs("hosts: [tcp-echo]\ntcp:\n- match: [{port: 9000}]"),
         [("spec.tcp[0].route", "TCP route is required")]),
    Case("tcp-bad-subnet", vs("hosts: [db]\ntcp:\n- match: [{destinationSubnets: [10.0.0.0/33]}]\n"
                              "  route:\n  - destination: {host: db}"),
         [("spec.tcp[0].match[0].destinationSubnets[0]", "10.0.0.0/33 is not a valid CIDR block")]),
    Case("tls-sni-not-in-hosts", vs("hosts: [a.example.com]\ntls:\n- match: [{sniHosts: [b.example.com]}]\n"
                                    "  route:\n  - destination: {host: b.example.com}"),
         [("spec.tls[0].match[0].sniHosts[0]", "is not a compatible subset of any of the virtual service hosts")]),
    # DestinationRule
    Case("dr-host-missing", dr("subsets: [{name: v1}]"), [("spec.host", "host is required")]),
    Case("dr-subset-name-invalid", dr("host: reviews\nsubsets: [{name: v1.0, labels: {version: v1}}]"),
         [("spec.subsets[0].name", "subset name is invalid: v1.0")]),
    Case("dr-subset-name-missing", dr("host: reviews\nsubsets: [{labels: {version: v1}}]"),
         [("spec.subsets[0].name", "subset name cannot be empty")]),
    Case("dr-duplicate-subsets", dr("host: reviews\nsubsets: [{name: v1}, {name: v1}]"),
         [("spec.subsets[1].name", "duplicate subset names: v1")]),
    Case("dr-label-key-invalid", dr("host: reviews\nsubsets: [{name: v1, labels: {-version: v1}}]"),
         [("spec.subsets[0].labels.-version", "invalid tag key: '-version'")]),
    Case("dr-enum-unknown-name", dr("host: reviews\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}"),
         [("spec.trafficPolicy.loadBalancer.simple", "expected one of UNSPECIFIED, LEAST_CONN, RANDOM")]),
    Case("dr-enum-number-out-of-range", dr("host: reviews\ntrafficPolicy: {loadBalancer: {simple: 9}}"),
         [("spec.trafficPolicy.loadBalancer.simple", "invalid LoadBalancerSettings.SimpleLB integer 9")]),
    Case("dr-empty-traffic-policy", dr("host: reviews\ntrafficPolicy: {}"),
         [("spec.trafficPolicy", "traffic policy must have at least one field")]),
    Case("dr-empty-connection-pool", dr("host: reviews\ntrafficPolicy: {connectionPool: {}}"),
         [("spec.trafficPolicy.connectionPool", "connection pool must have at least one field")]),
    Case("dr-outlier-percent", dr("host: reviews\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}"),
         [("spec.trafficPolicy.outlierDetection.maxEjectionPercent", "percentage 101 is not in range 0..100")]),
    Case("dr-port-level-without-port", dr("host: reviews\ntrafficPolicy:\n  portLevelSettings:\n"
                                          "  - loadBalancer: {simple: RANDOM}"),
         [("spec.trafficPolicy.portLevelSettings[0].port", "portTrafficPolicy must have valid port")]),
    Case("dr-maglev-not-prime", dr("host: reviews\ntrafficPolicy:\n  loadBalancer:\n"
                                   "    consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}"),
         [("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "must be a prime number")]),
    Case("dr-cookie-without-name", dr("host: reviews\ntrafficPolicy:\n  loadBalancer:\n"
                                      "    consistentHash: {httpCookie: {ttl: 10s}}"),
         [("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "name required for HttpCookie")]),
    Case("dr-mutual-tls-without-certs", dr("host: reviews\ntrafficPolicy: {tls: {mode: MUTUAL}}"),
         [("spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls"),
          ("spec.trafficPolicy.tls.privateKey", "private key required for mutual tls")]),
    # Gateway
    Case("gateway-no-servers", gw("selector: {istio: ingressgateway}"),
         [("spec.servers", "gateway must have at least one server")]),
    Case("gateway-port-name-missing", gw("servers:\n- port: {number: 80, protocol: HTTP}\n  hosts: ['*']"),
         [("spec.servers[0].port.name", "port name must be set")]),
    Case("gateway-duplicate-port-names", gw("servers:\n- port: {number: 80, name: web, protocol: HTTP}\n"
                                            "  hosts: ['*']\n- port: {number: 8080, name: web, protocol: HTTP}\n"
                                            "  hosts: ['*']"),
         [("spec.servers[1].port.name", "port names in servers must be unique: duplicate name web")]),
    Case("gateway-hosts-missing", gw("servers:\n- port: {number: 80, name: http, protocol: HTTP}"),
         [("spec.servers[0].hosts", "server config must contain at least one host")]),
    Case("gateway-https-without-tls", gw("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n"
                                         "  hosts: ['*']"),
         [("spec.servers[0].tls", "server must have TLS settings for HTTPS/TLS protocols")]),
    Case("gateway-tcp-with-tls", gw("servers:\n- port: {number: 31400, name: tcp, protocol: TCP}\n  hosts: ['*']\n"
                                    "  tls: {mode: SIMPLE, credentialName: x}"),
         [("spec.servers[0].tls", "server cannot have TLS settings for non HTTPS/TLS ports")]),
    Case("gateway-port-out-of-range", gw("servers:\n- port: {number: 70000, name: http, protocol: HTTP}\n"
                                         "  hosts: ['*']"),
         [("spec.servers[0].port.number", "port number 70000 must be in the range 1..65535")]),
    Case("gateway-protocol-unknown", gw("servers:\n- port: {number: 80, name: http, protocol: SMTP}\n"
                                        "  hosts: ['*']"),
         [("spec.servers[0].port.protocol", "invalid protocol 'SMTP'")]),
    Case("gateway-short-host", gw("servers:\n- port: {number: 80, name: http, protocol: HTTP}\n"
                                  "  hosts: [reviews]"),
         [("spec.servers[0].hosts[0]", "short names (non FQDN) are not allowed")]),
    Case("gateway-name-with-dot", gw("servers:\n- port: {number: 80, name: http, protocol: HTTP}\n"
                                     "  hosts: ['*']", name="my.gateway"),
         [("metadata.name", "invalid gateway name: 'my.gateway'")]),
    # ServiceEntry / WorkloadEntry
    Case("se-no-hosts", se("ports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS"),
         [("spec.hosts", "service entry must have at least one host")]),
    Case("se-host-star", se("hosts: ['*']\nports: [{number: 80, name: http, protocol: HTTP}]"),
         [("spec.hosts[0]", "invalid host *")]),
    Case("se-duplicate-ports", se("hosts: [a.example.com]\nresolution: DNS\nports:\n"
                                  "- {number: 80, name: http, protocol: HTTP}\n"
                                  "- {number: 80, name: http, protocol: HTTP}"),
         [("spec.ports[1].name", "service entry port name 'http' already defined"),
          ("spec.ports[1].number", "service entry port 80 already defined")]),
    Case("se-resolution-unknown", se("hosts: [a.example.com]\nresolution: STATICS"),
         [("spec.resolution", "invalid ServiceEntry.Resolution string 'STATICS'")]),
    Case("se-static-fqdn-endpoint", se("hosts: [reviews.local]\nports: [{number: 9080, name: http, protocol: HTTP}]\n"
                                       "resolution: STATIC\nendpoints: [{address: reviews-v1.local}]"),
         [("spec.endpoints[0].address", "is not a valid IP address")]),
    Case("se-dns-bad-endpoint", se("hosts: [a.example.com]\nresolution: DNS\nendpoints: [{address: bad_host!}]"),
         [("spec.endpoints[0].address", "is not a valid FQDN or an IP address")]),
    Case("se-endpoint-port-undefined", se("hosts: [reviews.local]\nports: [{number: 9080, name: http}]\n"
                                          "resolution: STATIC\nendpoints: [{address: 127.0.0.1, ports: {grpc: 9}}]"),
         [("spec.endpoints[0].ports.grpc", "endpoint port 'grpc' is not defined by the service entry")]),
    Case("se-endpoints-and-selector", se("hosts: [reviews.local]\nresolution: STATIC\n"
                                         "workloadSelector: {labels: {app: reviews}}\n"
                                         "endpoints: [{address: 10.0.0.1}]"),
         [("spec.endpoints", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")]),
    Case("se-none-with-endpoints", se("hosts: [a.example.com]\nresolution: NONE\nendpoints: [{address: 10.0.0.1}]"),
         [("spec.endpoints", "no endpoints should be provided for resolution type none")]),
    Case("se-dns-wildcard-without-endpoints", se("hosts: ['*.example.com']\nresolution: DNS"),
         [("spec.hosts[0]", "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for "
                            "resolution mode DNS")]),
    Case("se-port-name-invalid", se("hosts: [a.example.com]\nresolution: DNS\n"
                                    "ports: [{number: 80, name: http_1, protocol: HTTP}]"),
         [("spec.ports[0].name", "invalid port name: http_1")]),
    Case("se-multiple-hosts-tcp", se("hosts: [a.example.com, b.example.com]\nresolution: DNS\n"
                                     "ports: [{number: 5432, name: tcp-pg, protocol: TCP}]"),
         [("spec.ports[0].protocol", "multiple hosts provided with non-HTTP, non-TLS ports")]),
    Case("we-address-missing", we("ports: {http: 9080}"), [("spec.address", "address is required")]),
    Case("we-port-out-of-range", we("address: 10.0.0.1\nports: {http: 70000}"),
         [("spec.ports.http", "port number 70000 must be in the range 1..65535")]),
    Case("metadata-name-invalid", vs(ROUTE_50_50, name="Reviews_1"),
         [("metadata.name", "invalid name 'Reviews_1'")]),
]

DR_REVIEWS = dr("host: reviews\nsubsets: [{name: v1, labels: {version: v1}}, {name: v3, labels: {version: v3}}]")
SE_REVIEWS = se("hosts: [reviews]\nports: [{number: 9080, name: http, protocol: HTTP}]\nresolution: STATIC\n"
                "endpoints: [{address: 127.0.0.1, labels: {version: v1}}]", name="reviews")

WARNING_CASES = [
    Case("subset-not-defined", vs(ROUTE_50_50.replace("subset: v3", "subset: v4")) + "---\n" + DR_REVIEWS,
         warnings=[("spec.http[0].route[1].destination.subset", "subset v4 is not defined by any DestinationRule "
                    "for reviews.default.svc.cluster.local: requests will get 503 NC")]),
    Case("weight-zero-among-several", vs(ROUTE_50_50.replace("weight: 50\n", "weight: 0\n", 2).replace(
        "weight: 0\n", "weight: 50\n", 1)),
         warnings=[("spec.http[0].route[1].weight", "this destination gets no traffic")]),
    Case("missing-weight-among-several", vs(ROUTE_50_50.replace("    weight: 50\n", "", 1)),
         warnings=[("spec.http[0].route[0]", "this destination gets no traffic")]),
    Case("rule-shadowed-by-catch-all", vs("hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n"
                                          "- match: [{headers: {end-user: {exact: jason}}}]\n"
                                          "  route:\n  - destination: {host: reviews}"),
         warnings=[("spec.http[1]", "virtualService rule #1 not used (route without matches defined before")]),
    Case("rule-shadowed-by-prefix-slash", vs("hosts: [reviews]\nhttp:\n- name: all\n  match: [{uri: {prefix: /}}]\n"
                                             "  route:\n  - destination: {host: reviews}\n- name: api\n"
                                             "  match: [{uri: {prefix: /api}}]\n"
                                             "  route:\n  - destination: {host: reviews}"),
         warnings=[("spec.http[1]", 'virtualService rule "api" not used')]),
    Case("duplicate-match", vs("hosts: [reviews]\nhttp:\n- match: [{uri: {exact: /a}}]\n"
                               "  route:\n  - destination: {host: reviews}\n- match: [{uri: {exact: /a}}]\n"
                               "  route:\n  - destination: {host: reviews}"),
         warnings=[("spec.http[1].match[0]", "is not used (duplicate/overlapping match in rule #0)"),
                   ("spec.http[1]", "not used (all matches used by prior rules)")]),
    Case("prefix-overlap", vs("hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /api}}]\n"
                              "  route:\n  - destination: {host: reviews}\n- match: [{uri: {prefix: /api/v2}}]\n"
                              "  route:\n  - destination: {host: reviews}"),
         warnings=[("spec.http[1].match[0]", "of prefix /api/v2 is not used (duplicate/overlapping match in rule #0 "
                    "of prefix /api on #0)")]),
    Case("static-service-without-endpoints", se("hosts: [reviews.local]\nresolution: STATIC\n"
                                                "ports: [{number: 80, name: http, protocol: HTTP}]"),
         warnings=[("spec.endpoints", "service has no endpoints")]),
    Case("virtual-service-host-not-in-registry", vs(ROUTE_50_50) + "---\n" + DR_REVIEWS,
         warnings=[("spec.hosts[0]", "host reviews.default.svc.cluster.local is not defined by any ServiceEntry")]),
    Case("destination-rule-host-not-in-registry", DR_REVIEWS,
         warnings=[("spec.host", "host reviews.default.svc.cluster.local is not defined by any ServiceEntry")]),
    Case("gateway-not-defined", vs(ROUTE_50_50.replace("[reviews]", "[bookinfo.example.com]") +
                                   "gateways: [istio-system/ingress]\n"),
         warnings=[("spec.gateways[0]", "gateway istio-system/ingress is not defined by any Gateway")]),
    Case("legacy-gateway-name", vs(ROUTE_50_50 + "gateways: [ingress.istio-system.svc.cluster.local, mesh]\n"),
         warnings=[("spec.gateways[0]", "using legacy gatewayName format")]),
    Case("abort-without-percentage", http_rule("fault: {abort: {httpStatus: 503}}\n" + ONE_DEST),
         warnings=[("spec.http[0].fault.abort", "no request will be aborted")]),
]


def _check(case: Case) -> None:
    errors, warnings = run(case.yaml)
    got_errors = {(e.path, e.reason) for e in errors}
    assert {p for p, _ in got_errors} == {p for p, _ in case.errors}, [str(e) for e in errors]
    for path, phrase in case.errors:
        assert any(p == path and phrase in reason for p, reason in got_errors), (path, phrase, got_errors)
    for path, phrase in case.warnings:
        assert any(w.path == path and phrase in w.reason for w in warnings), (path, phrase, [str(w) for w in warnings])
    assert all(e.severity == "error" for e in errors) and all(w.severity == "warning" for w in warnings)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid(case: Case) -> None:
    assert case.errors == []
    _check(case)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid(case: Case) -> None:
    assert case.errors, "an invalid case names its errors"
    _check(case)


@pytest.mark.parametrize("case", WARNING_CASES, ids=lambda c: c.id)
def test_warnings(case: Case) -> None:
    assert case.warnings
    _check(case)


def test_canonical_spec_renames_snake_case_fields_only() -> None:
    text = vs("""
        hosts: [reviews]
        export_to: ["."]
        http:
        - match: [{without_headers: {x_debug: {exact: "1"}}}]
          retries: {attempts: 2, per_try_timeout: 1.5s}
          route:
          - destination: {host: reviews}
        """)
    (obj,) = load_text(text, "case.yaml").objects
    spec = canonical_spec(obj)
    assert spec["exportTo"] == ["."]
    rule = spec["http"][0]
    assert rule["retries"] == {"attempts": 2, "perTryTimeout": "1.5s"}
    assert rule["match"] == [{"withoutHeaders": {"x_debug": {"exact": "1"}}}]  # map keys are data, not fields
    assert obj.spec["http"][0]["retries"] == {"attempts": 2, "per_try_timeout": "1.5s"}  # the input is untouched


def test_rendered_diagnostics_carry_file_line_and_path() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 101
    - destination:
        host: reviews
        subset: v3
      weight: -1
    timeout: 1.5ms
"""
    errors, _ = run(text)
    assert [str(e) for e in errors] == [
        "case.yaml:17: spec.http[0].route[1].weight: weight -1 < 0",
        "case.yaml:18: spec.http[0].timeout: only durations to ms precision are supported",
    ]


def test_line_of_second_document_and_missing_field() -> None:
    text = vs(ROUTE_50_50) + "---\n" + gw("selector: {istio: ingressgateway}\nservers:\n- port: {number: 80}\n"
                                          "  hosts: ['*']")
    errors, _ = run(text)
    by_path = {e.path: e for e in errors}
    # the Gateway document starts on line 14 and `- port:` is on line 21; the missing fields point at it
    assert by_path["spec.servers[0].port.name"].line == 21
    assert by_path["spec.servers[0].port.protocol"].line == 21
    assert by_path["spec.servers[0].port.name"].file == "case.yaml"


def test_every_error_is_reported_at_once() -> None:
    # weights -5 and 0: one negative weight, but the total is not 0
    text = http_rule(textwrap.dedent("""
        match: [{uri: {regex: "(("}}]
        timeout: 0s
        retries: {attempts: -2}
        route:
        - destination: {host: reviews, subset: v_1}
          weight: -5
        - destination: {host: "*"}
          weight: 0
        """)) + "---\n" + dr("trafficPolicy: {}") + "---\n" + gw("servers: []")
    errors, _ = run(text)
    assert sorted(e.path for e in errors) == sorted([
        "spec.http[0].match[0].uri.regex", "spec.http[0].timeout", "spec.http[0].retries.attempts",
        "spec.http[0].route[0].destination.subset", "spec.http[0].route[0].weight",
        "spec.http[0].route[1].destination.host", "spec.host", "spec.trafficPolicy", "spec.servers",
    ])


def test_warnings_are_not_errors_and_subsets_resolve_across_objects() -> None:
    # the DestinationRule names the host by FQDN, the VirtualService by short name: same service
    fq_dr = DR_REVIEWS.replace("host: reviews", "host: reviews.default.svc.cluster.local")
    se_fqdn = SE_REVIEWS.replace("hosts: [reviews]", "hosts: [reviews.default.svc.cluster.local]")
    errors, warnings = run(vs(ROUTE_50_50) + "---\n" + fq_dr + "---\n" + se_fqdn)
    assert errors == []
    assert warnings == []


def test_short_name_expands_with_the_objects_namespace() -> None:
    # a DestinationRule in namespace `prod` defines reviews.prod…, not reviews.default…
    prod_dr = doc("DestinationRule", "host: reviews\nsubsets: [{name: v1}, {name: v3}]", namespace="prod")
    _, warnings = run(vs(ROUTE_50_50) + "---\n" + prod_dr)
    subset_warnings = [w.path for w in warnings if "is not defined by any DestinationRule" in w.reason]
    assert subset_warnings == ["spec.http[0].route[0].destination.subset", "spec.http[0].route[1].destination.subset"]


@pytest.mark.parametrize("spec", ["[]", "'text'", "42", "{http: 3}", "{http: [3, null, {route: 7}]}",
                                  "{hosts: [{a: 1}], http: [{match: 'x', route: [{destination: []}]}]}"])
def test_garbage_gives_errors_never_exceptions(spec: str) -> None:
    errors, _ = run(f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: x}}\nspec: {spec}\n")
    assert errors
    assert not any("internal error" in e.reason for e in errors)


def _mutations(value: object, rng: random.Random) -> object:
    """Replace one random node of a YAML tree with a value of another type."""
    replacements = [None, 0, -1, 70000, "", "*", "x y", 1.5, True, [], {}, [None], {"unknown": 1}]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: _mutations(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], _mutations(value[i], rng), *value[i + 1:]]
    return rng.choice(replacements)


def test_mutated_documents_never_raise() -> None:
    import yaml

    base = [yaml.safe_load(text) for text in (
        vs(ROUTE_50_50), DR_REVIEWS, SE_REVIEWS,
        gw("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
           "  tls: {mode: SIMPLE, credentialName: c}"),
        http_rule("match: [{uri: {prefix: /a}, headers: {x: {exact: y}}}]\nfault: {abort: {httpStatus: 503}}\n"
                  "retries: {attempts: 1}\nredirect: {uri: /b}"),
    )]
    rng = random.Random(1234)  # fixed seed: the same 300 documents every run
    internal = []
    for _ in range(300):
        mutated = _mutations(rng.choice(base), rng)
        text = yaml.safe_dump(mutated)
        loaded = load_text(text, "fuzz.yaml")
        errors, warnings = validate(loaded.objects)
        internal += [str(d) for d in errors + warnings if "internal error" in d.reason]
    assert internal == []


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("1.5s", 1.5), ("1h30m", 5400.0), ("100ms", 0.1), ("2us", 2e-6), ("2µs", 2e-6),
    ("0", 0.0), ("-3s", -3.0), (".5m", 30.0), ("1m0.25s", 60.25), ("300ns", 3e-7),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(("text", "phrase"), [
    ("", "invalid duration"), ("10", "missing unit"), ("1d", "unknown unit 'd'"), ("s", "invalid duration"),
    ("1 s", "unknown unit"), ("1.2.3s", "missing unit"), ("99999999999h", "out of range"),
])
def test_parse_duration_rejects(text: str, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        parse_duration(text)


@pytest.mark.parametrize(("host", "namespace", "expected"), [
    ("reviews", "default", "reviews.default.svc.cluster.local"),
    ("reviews", "prod", "reviews.prod.svc.cluster.local"),
    ("reviews.default", "prod", "reviews.default"),  # a dot means FQDN, taken as is
    ("Reviews", "default", "reviews.default.svc.cluster.local"),
    ("*.example.com", "default", "*.example.com"),
    ("*", "default", "*"),
    ("::1", "default", "::1"),
])
def test_fqdn(host: str, namespace: str, expected: str) -> None:
    assert fqdn(host, namespace) == expected


def test_host_matching() -> None:
    assert host_matches("*.foo.bar", "*.bar") and host_matches("*.bar", "a.foo.bar")
    assert not host_matches("a.foo.bar", "b.foo.bar")
    assert host_subset_of("foo.example.com", "*.com") and host_subset_of("example.com", "*.com")
    assert not host_subset_of("*.example.com", "foo.example.com")


@pytest.mark.parametrize(("pattern", "subject", "matches"), [
    (r"/api/v\d+/.*", "/api/v2/x", True),
    (r"(?i)/Login", "/login", True),
    (r"(?P<ver>v\d)\z", "v1", True),
    (r"(?<ver>v\d)", "v1", True),  # RE2's other named-group spelling
    (r"[[:digit:]]+", "123", True),
    (r"[[:alpha:]]+", "12", False),
    (r"\Qa.b\E", "a.b", True),
    (r"\Qa.b\E", "axb", False),
    (r"\pL+", "héllo", True),  # Unicode classes: RE2 has them
    (r"[[:alpha:]]+", "ab", True),
])
def test_compile_regex_is_re2(pattern: str, subject: str, matches: bool) -> None:
    assert (compile_regex(pattern).fullmatch(subject) is not None) is matches


@pytest.mark.parametrize(("pattern", "phrase"), [
    (r"a(?=b)", "lookaround"), (r"(?<!a)b", "lookaround"), (r"(a)\1", "backreferences"), (r"(?>a)", "atomic"),
    (r"a*+", "possessive"), (r"a{1001}", "at most 1000"), (r"x\Z", r"invalid escape sequence: \\Z"),
    ("*", "nothing to repeat"), ("a" * 1025, "too large"),
])
def test_compile_regex_rejects_what_re2_rejects(pattern: str, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        compile_regex(pattern)

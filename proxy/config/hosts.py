"""Host names as Istio reads them: short-name expansion, wildcard matching, DNS-1123 checks.

`fqdn` is Istio's ResolveShortnameToFQDN (`reviews` in `default` → `reviews.default.svc.cluster.local`);
`host_matches` / `host_subset_of` are `host.Name.Matches` / `SubsetOf`; the `check_*` functions return
Istio's error text, or None when the name is fine. Pure functions.
"""

from __future__ import annotations

import ipaddress
import re

CLUSTER_SUFFIX = ".svc.cluster.local"

DNS1123_LABEL_MAX = 63
# Istio's labels package accepts upper case in DNS-1123 labels (unlike Kubernetes)
_DNS1123_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?\Z")
_WILDCARD_LABEL = re.compile(r"(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)\Z")


def fqdn(host: str, namespace: str) -> str:
    """Expand a short name with the namespace of the object that wrote it.

    A name with a dot is taken as an FQDN; `*`, wildcards and IP literals are never expanded.
    Lower-cased, since DNS names compare case-insensitively.
    """
    host = host.lower()
    if "*" in host or "." in host or ":" in host:
        return host
    return f"{host}.{namespace}{CLUSTER_SUFFIX}"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_dns1123_label(text: str) -> bool:
    return len(text) <= DNS1123_LABEL_MAX and _DNS1123_LABEL.match(text) is not None


def is_wildcard_dns1123_label(text: str) -> bool:
    return len(text) <= DNS1123_LABEL_MAX and _WILDCARD_LABEL.match(text) is not None


def _check_preconditions(domain: str) -> str | None:
    if len(domain) > 255:
        return f"domain name {domain!r} too long (max 255)"
    if not domain:
        return "empty domain name not allowed"
    return None


def _check_labels(domain: str, whole: str) -> str | None:
    parts = domain.split(".")
    if parts[-1].isdigit():
        return f"domain name {whole!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # a trailing dot (`istio.io.`) is allowed
        if not is_dns1123_label(label):
            return f"domain name {whole!r} invalid (label {label!r} invalid)"
    return None


def check_fqdn(domain: str) -> str | None:
    return _check_preconditions(domain) or _check_labels(domain, domain)


def check_wildcard_domain(domain: str) -> str | None:
    """A DNS name whose first label may be a wildcard (`*`, `*.example.com`, `*-foo.example.com`)."""
    problem = _check_preconditions(domain)
    if problem:
        return problem
    first, _, rest = domain.partition(".")
    if not is_wildcard_dns1123_label(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    if rest or domain.endswith("."):
        return _check_labels(rest, domain)
    return None


def check_partial_wildcard(host: str) -> str | None:
    if "*" in host and len(host) != 1 and not host.startswith("*."):
        return f"partial wildcard {host!r} not allowed"
    return None


def host_matches(a: str, b: str) -> bool:
    """True if the two (possibly wildcard) hosts overlap, e.g. `*.foo.bar` and `*.bar`."""
    a_wild, b_wild = a.startswith("*"), b.startswith("*")
    if a_wild and b_wild:
        return b[1:].endswith(a[1:]) if len(a) < len(b) else a[1:].endswith(b[1:])
    if a_wild:
        return b.endswith(a[1:])
    if b_wild:
        return a.endswith(b[1:])
    return a == b


def host_subset_of(a: str, b: str) -> bool:
    """True if every name `a` covers is also covered by `b` (`foo.example.com` ⊂ `*.com`)."""
    if a.startswith("*") and not b.startswith("*"):
        return False
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b

"""HTTPRoute filters → the VirtualService rule fields that do the same: `headers`, `redirect`, `rewrite`.

RequestMirror and ExtensionRef are validated but not applied (the compiler says so once per reload).
"""

from __future__ import annotations

from typing import Any

from proxy.gatewayapi.resolve import as_dict, as_int, as_list, as_str


def _header_ops(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op in ("set", "add"):
        values = {as_str(as_dict(h).get("name")).lower(): as_str(as_dict(h).get("value"))
                  for h in as_list(spec.get(op))}
        if values:
            out[op] = values
    remove = [as_str(n).lower() for n in as_list(spec.get("remove"))]
    if remove:
        out["remove"] = remove
    return out


def http_filters(filters: list[Any]) -> dict[str, Any]:
    """The VirtualService rule fields for a rule's (or a backendRef's) filters.

    A `ReplacePrefixMatch` rewrite comes back as `rewrite.uri` plus `prefixRewrite: True`: the caller
    splits the rule so the matched prefix (not the whole path) is replaced.
    """
    out: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    for f in filters:
        f = as_dict(f)
        kind = f.get("type")
        if kind == "RequestHeaderModifier":
            headers["request"] = _header_ops(as_dict(f.get("requestHeaderModifier")))
        elif kind == "ResponseHeaderModifier":
            headers["response"] = _header_ops(as_dict(f.get("responseHeaderModifier")))
        elif kind == "RequestRedirect":
            spec = as_dict(f.get("requestRedirect"))
            redirect: dict[str, Any] = {"redirectCode": as_int(spec.get("statusCode")) or 302}
            if spec.get("scheme"):
                redirect["scheme"] = as_str(spec["scheme"])
            if spec.get("hostname"):
                redirect["authority"] = as_str(spec["hostname"])
            if as_int(spec.get("port")):
                redirect["port"] = spec["port"]
            path = as_dict(spec.get("path"))
            if path.get("type") == "ReplaceFullPath":
                redirect["uri"] = as_str(path.get("replaceFullPath"))
            out["redirect"] = redirect
        elif kind == "URLRewrite":
            spec = as_dict(f.get("urlRewrite"))
            rewrite: dict[str, Any] = {}
            if spec.get("hostname"):
                rewrite["authority"] = as_str(spec["hostname"])
            path = as_dict(spec.get("path"))
            if path.get("type") == "ReplaceFullPath":
                rewrite["uriRegexRewrite"] = {"match": "^.*$", "rewrite": as_str(path.get("replaceFullPath"))}
            elif path.get("type") == "ReplacePrefixMatch":
                rewrite["uri"] = as_str(path.get("replacePrefixMatch"))
                out["prefixRewrite"] = True
            if rewrite:
                out["rewrite"] = rewrite
    if headers:
        out["headers"] = headers
    return out

"""VirtualService rules and matches that can never be used (Istio's analyzeUnreachable*Rules,
warnings only): rules after a catch-all, duplicate matches, prefixes hidden by a shorter earlier one."""

from __future__ import annotations

import json
from typing import Any

from proxy.config.schema import Msg, Report


def _label(rule: Msg, n: int, kind: str) -> str:
    name = rule.get("name") if kind == "http" else None
    return json.dumps(name) if name else f"#{n}"


def _is_catch_all(match: Msg) -> bool:
    """A match block that every request satisfies: empty, or only `uri: {prefix: "/"}`."""
    conditions = {k: v for k, v in match.items() if k not in ("name", "statPrefix", "ignoreUriCase")}
    uri = conditions.pop("uri", None)
    if conditions or match.bad:
        return False
    return uri is None or (isinstance(uri, Msg) and set(uri) == {"prefix"} and uri["prefix"] in ("", "/"))


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k != "name"}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _analyze_unreachable(r: Report, vs: Msg, kind: str) -> None:
    rules = vs.get(kind) or []
    seen: dict[str, int] = {}
    catch_all: tuple[int, str] | None = None  # (index, label) of the first rule matching everything
    prefix_matches: list[dict[str, Any]] = []
    for n, rule in enumerate(rules):
        if not isinstance(rule, Msg):
            continue
        label = _label(rule, n, kind)
        matches = [m for m in rule.get("match") or [] if isinstance(m, Msg)]
        if catch_all is not None:
            reason = ("only the last rule can have no matches" if not matches
                      else f"route without matches defined before: rule {catch_all[1]} matches every request")
            r.warn(rule.path, f"virtualService rule {label} not used ({reason})")
            continue
        if not matches:
            if "match" not in rule.bad:
                catch_all = (n, label)
            continue
        duplicates = 0
        for k, match in enumerate(matches):
            key = json.dumps(_canonical(match), sort_keys=True, default=str)
            if key in seen:
                duplicates += 1
                dup = seen[key]
                r.warn(rule.at("match", k), f"virtualService rule {label} match {_match_label(match, k)} is not used "
                                            f"(duplicate/overlapping match in rule {_label(rules[dup], dup, kind)})")
                continue
            seen[key] = n
            if kind == "http" and (entry := _prefix_entry(match, label, _match_label(match, k))):
                entry["path"] = rule.at("match", k)
                prefix_matches.append(entry)
        if duplicates == len(matches):
            r.warn(rule.path, f"virtualService rule {label} not used (all matches used by prior rules)")
        elif any(_is_catch_all(m) for m in matches):
            catch_all = (n, label)
    for i, a in enumerate(prefix_matches):
        for b in prefix_matches[i + 1:]:
            if b["prefix"] != a["prefix"] and _covered(a, b):
                r.warn(b["path"], f"virtualService rule {b['rule']} match {b['match']} of prefix {b['prefix']} is not "
                                  f"used (duplicate/overlapping match in rule {a['match']} of prefix {a['prefix']} "
                                  f"on {a['rule']})")


def _match_label(match: Msg, k: int) -> str:
    return json.dumps(match["name"]) if match.get("name") else f"#{k}"


def _exact_or_prefix(sm: Any) -> str:
    if isinstance(sm, Msg):
        if sm.get("exact"):
            return "exact:" + sm["exact"]
        if sm.get("prefix"):
            return "prefix:" + sm["prefix"]
    return ""


def _prefix_entry(match: Msg, rule_label: str, match_label: str) -> dict[str, Any] | None:
    """What Istio compares to find a prefix match hidden by an earlier, shorter prefix."""
    uri = match.get("uri")
    prefix = uri.get("prefix", "") if isinstance(uri, Msg) else ""
    if not prefix:
        return None

    def table(name: str) -> dict[str, str]:
        return {k: _exact_or_prefix(v) for k, v in (match.get(name) or {}).items()}

    return {"rule": rule_label, "match": match_label, "prefix": prefix, "port": match.get("port", 0),
            "method": _exact_or_prefix(match.get("method")) or "exact:GET",
            "authority": _exact_or_prefix(match.get("authority")), "headers": table("headers"),
            "query": table("queryParams"), "without": table("withoutHeaders")}


def _covered(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Istio's coveredValidation: does earlier match `a` take every request later match `b` would?"""
    if not b["prefix"].startswith(a["prefix"]) or a["port"] != b["port"]:
        return False
    for field in ("method", "authority"):
        if a[field] != b[field] and not a[field].startswith(b[field]):
            return False
    for field in ("headers", "query", "without"):
        if len(a[field]) != len(b[field]):
            return False
        for key, value in a[field].items():
            if key not in b[field] or (value != b[field][key] and not value.startswith(b[field][key])):
                return False
    return True

"""docs/fields.md: every Istio field the validator accepts, per kind, with what the proxy does with it.

Generated from the schema tables (`fields.py`) and the enforcement table (`enforcement.py`), so the page
cannot drift from what validation warns about: `python -m proxy.config.fields_doc > docs/fields.md`.
"""

from __future__ import annotations

from proxy.config.enforcement import ENFORCED, NOT_ENFORCED, PARTIAL, status
from proxy.config.fields import FIELDS

KINDS = ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry")

HEADER = f"""# Istio fields: enforced, or not yet

Every field of the Istio networking API (`networking.istio.io` v1, v1beta1, v1alpha3) that `shiftproxy
validate` accepts, per kind, and what the proxy does with it:

- **{ENFORCED}**: the proxy acts on it as Envoy and istiod would;
- **{PARTIAL}**: some values are enforced (the note says which); the others draw a warning;
- **{NOT_ENFORCED}**: valid Istio, accepted, and not acted on. A config that sets it still loads, and
  `shiftproxy validate` (exit 0), `shiftproxy apply` (on stderr, exit 0) and the admin `/config_dump`
  (`warnings`) name the file, line and YAML path with a warning. A field inside a field that is not
  enforced is not enforced either.

`[]` marks a list item, `<key>` a map value. This page is generated from the proxy's own tables
(`python -m proxy.config.fields_doc > docs/fields.md`); a test keeps it equal to them.
"""


def rows(kind: str) -> list[tuple[str, str, str]]:
    """(YAML path, status, note) for every field under `spec` of `kind`. Raises LookupError for a field the
    enforcement table does not classify."""
    out: list[tuple[str, str, str]] = []
    expanded: dict[tuple[str, bool], str] = {}  # (message, parent enforced) → where its fields are listed

    def walk(message: str, path: str, enforced: bool) -> None:
        expanded[(message, enforced)] = path
        for name, type_spec in FIELDS[message].items():
            row = status(message, name, enforced)
            if row is None:
                raise LookupError(f"the enforcement table has no row for {message}.{name} ({path}.{name})")
            inner, suffix = type_spec, ""
            if type_spec.startswith("["):
                inner, suffix = type_spec[1:-1], "[]"
            elif type_spec.startswith("{"):
                inner, suffix = type_spec[1:-1], ".<key>"
            field_path = f"{path}.{name}"
            note = row.note
            child_enforced = enforced and row.state != NOT_ENFORCED
            if inner in FIELDS and (inner, child_enforced) in expanded:
                same = f"same fields as `{expanded[(inner, child_enforced)]}`"
                note = f"{note}; {same}" if note else "S" + same[1:]
                out.append((field_path, row.state, note))
                continue
            out.append((field_path, row.state, note))
            if inner in FIELDS:
                walk(inner, field_path + suffix, child_enforced)

    walk(kind, "spec", True)
    return out


def render() -> str:
    parts = [HEADER]
    for kind in KINDS:
        parts.append(f"\n## {kind}\n\n| field | status | note |\n|---|---|---|\n")
        for path, state, note in rows(kind):
            escaped = note.replace("|", "\\|")
            parts.append(f"| `{path}` | {state} | {escaped} |\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")

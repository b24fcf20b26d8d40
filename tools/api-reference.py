#!/usr/bin/env python3
"""Renders the API reference of the docs (docs/reference/api.md) from the CRD that `make crds` generates.

Every field of every served version, spec and status, with its type, whether it is required, its description, and
what the apiserver checks when a profile is applied: enum, default, pattern, lengths, bounds, item counts, and the
CEL rules (with the message users see). Nothing is written by hand, so the page cannot drift from the API:
`make check-generated` renders it again and fails when the committed page differs.

Usage: tools/api-reference.py [CRD ...] > docs/reference/api.md   (default: crds/*.yaml). Needs PyYAML (installed
by tools/python-tools.sh into the tools' virtualenv).
"""

import glob
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(text):
    """A description as one paragraph: the CRD's descriptions are doc comments wrapped at 120 columns."""
    return " ".join(line.strip() for line in (text or "").splitlines() if line.strip())


def code(value):
    """`value` as inline code, with a fence long enough for the backticks it holds."""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def has_fields(schema):
    return bool(schema.get("properties"))


def child(schema):
    """The object a field leads to: itself, the items of an array, or the values of a map; None for scalars."""
    if has_fields(schema):
        return schema
    items = schema.get("items")
    if isinstance(items, dict) and has_fields(items):
        return items
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and has_fields(values):
        return values
    return None


def type_of(schema):
    kind = schema.get("type")
    if kind == "array":
        return f"array of {type_of(schema.get('items') or {})}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) and not has_fields(schema):
        return f"map of {type_of(schema['additionalProperties'])}"
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"
    if kind is None:
        return "any"
    return f"{kind} ({schema['format']})" if schema.get("format") else kind


def bounds(schema, low, high, unit):
    lo, hi = schema.get(low), schema.get(high)
    if lo is not None and hi is not None:
        return f"{lo} to {hi} {unit}"
    if lo is not None:
        return f"at least {lo} {unit}"
    if hi is not None:
        return f"at most {hi} {unit}"
    return None


def constraints(schema):
    """What the apiserver checks about one value, as short sentences."""
    said = []
    if "enum" in schema:
        said.append("One of " + ", ".join(code(v) for v in schema["enum"]) + ".")
    if "default" in schema:
        said.append(f"Default {code(schema['default'])}.")
    if "pattern" in schema:
        said.append(f"Matches {code(schema['pattern'])}.")
    for low, high, unit in (("minLength", "maxLength", "characters"), ("minItems", "maxItems", "items"),
                            ("minProperties", "maxProperties", "entries")):
        span = bounds(schema, low, high, unit)
        if span:
            said.append(span[0].upper() + span[1:] + ".")
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None or hi is not None:
        said.append("From " + (str(lo) if lo is not None else "any") + " to " + (str(hi) if hi is not None else "any") + ".")
    if schema.get("x-kubernetes-list-type"):
        said.append(f"List type {code(schema['x-kubernetes-list-type'])}.")
    items = schema.get("items")
    if isinstance(items, dict) and not has_fields(items):
        inner = constraints(items)
        if inner:
            said.append("Each item: " + " ".join(inner))
    return said


def rules(schema):
    """The CEL rules on an object, as list items: the message users see, then the rule."""
    lines = []
    for rule in schema.get("x-kubernetes-validations") or []:
        where = f" (on {code(rule['fieldPath'])})" if rule.get("fieldPath") else ""
        message = one_line(rule.get("message", "")) or "(no message)"
        lines.append(f"- {message}{where}: {code(rule['rule'])}")
    return lines


def anchor(path):
    return path.replace("[]", "")


class Page:
    def __init__(self):
        self.out = []

    def line(self, text=""):
        self.out.append(text)

    def field(self, name, schema, required, path):
        flags = "required" if required else "optional"
        self.line(f"- **{code(name)}** · *{type_of(schema)}* · {flags}")
        body = []
        description = one_line(schema.get("description"))
        if description:
            body.append(description)
        body.extend(constraints(schema))
        target = child(schema)
        found = None
        if target is not None:
            shown = path + ("[]" if schema.get("type") == "array" else "{}" if not has_fields(schema) else "")
            body.append(f"Fields: [{shown}](#{anchor(shown)}).")
            found = (shown, target)
        if body:
            self.line()
            self.line("    " + " ".join(body))
        nested = rules(schema) if target is None else []
        for rule in nested:
            self.line("    " + rule)
        self.line()
        return found

    def object(self, path, schema):
        self.line(f"## {path} {{#{anchor(path)}}}")
        self.line()
        description = one_line(schema.get("description"))
        if description:
            self.line(description)
            self.line()
        checked = rules(schema)
        if checked:
            self.line("Checked when applied (the apiserver refuses the profile with the message):")
            self.line()
            self.out.extend(checked)
            self.line()
        required = set(schema.get("required") or [])
        children = []
        for name, field in (schema.get("properties") or {}).items():
            children.append(self.field(name, field, name in required, f"{path}.{name}"))
        # Each object's fields right after it, depth first: spec's whole tree, then status's.
        for found in filter(None, children):
            self.object(*found)


def render(crd):
    spec = crd["spec"]
    names = spec["names"]
    page = Page()
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        api_version = f"{spec['group']}/{version['name']}"
        page.line(f"## {names['kind']} `{api_version}` {{#{names['kind'].lower()}-{version['name']}}}")
        page.line()
        scope = "cluster-scoped" if spec.get("scope") == "Cluster" else "namespaced"
        short = ", ".join(code(n) for n in names.get("shortNames", []))
        page.line(f"{scope}; plural {code(names['plural'])}" + (f", short name {short}" if short else "")
                  + (", categories " + ", ".join(code(c) for c in names["categories"]) if names.get("categories") else "")
                  + ("; status is a subresource" if "status" in (version.get("subresources") or {}) else "")
                  + ".")
        page.line()
        columns = version.get("additionalPrinterColumns") or []
        if columns:
            page.line(f"`kubectl get {names['plural']}` shows (`-o wide` adds those of priority 1):")
            page.line()
            page.line("| column | value | priority | description |")
            page.line("|---|---|---|---|")
            for c in columns:
                cells = [c["name"], code(c["jsonPath"]), str(c.get("priority", 0)), one_line(c.get("description", ""))]
                if any("|" in cell for cell in cells):
                    sys.exit(f"api-reference: a printer column holds '|', which a Markdown table cannot: {c}")
                page.line("| " + " | ".join(cells) + " |")
            page.line()
        schema = version["schema"]["openAPIV3Schema"]
        for name in ("spec", "status"):
            if name in (schema.get("properties") or {}):
                page.object(name, schema["properties"][name])
    return page.out


def main(paths):
    paths = paths or sorted(glob.glob(os.path.join(ROOT, "crds", "*.yaml")))
    out = [
        "# API reference",
        "",
        "<!-- Generated from the CRD by tools/api-reference.py: do not edit. `make api-reference` writes it again;",
        "     `make check-generated` fails when it is stale. -->",
        "",
        "Every field of the API, generated from the CRD (" + ", ".join(code(os.path.relpath(p, ROOT)) for p in paths)
        + ") that the chart installs. What is listed under a field (allowed values, default, pattern, lengths) and"
        " the rules under an object are checked by the apiserver when a profile is applied: a profile that breaks"
        " one is refused with the message shown. `status` is written by regcred only.",
        "",
    ]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for crd in yaml.safe_load_all(f):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    out.extend(render(crd))
    while out and out[-1] == "":
        out.pop()
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

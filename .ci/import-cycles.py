#!/usr/bin/env python3
"""Import cycles between the modules of each crate: `.ci/import-cycles.py CRATE_SRC...`.

A module is a file; an edge is a path it names (`crate::a::b`, `super::x`, `self::y`, or a
child module `c::z`), resolved to the longest module prefix. The crate root is left out: a
lib.rs re-exporting what its modules define is the crate's face, not a dependency. Exits 1
and prints each cycle when there is one. Test modules (`tests.rs`, `story_tests.rs`,
`test_support.rs`, `#[cfg(test)] mod tests { ... }`) are not counted.
"""
import os
import re
import sys

TEST_FILES = {"tests", "story_tests", "test_support"}


def modules(src):
    found = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, src)[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                found[tuple(parts)] = path
    return found


def expand_use(body):
    """`a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`."""
    body = body.strip()
    match = re.match(r"^(.*?)\{(.*)\}$", body, re.S)
    if not match:
        return [body]
    prefix, inner = match.groups()
    parts, depth, current = [], 0, ""
    for ch in inner:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [prefix + e for p in parts if p.strip() for e in expand_use(p.strip())]


def edges_of(src):
    mods = modules(src)
    edges = {}
    for mod, path in mods.items():
        if mod and mod[-1] in TEST_FILES:
            continue
        text = re.sub(r"//[^\n]*", "", open(path, encoding="utf-8").read())
        cut = text.find("#[cfg(test)]\nmod tests {")
        if cut >= 0:
            text = text[:cut]
        paths = [p for m in re.finditer(r"\buse\s+([^;]+);", text) for p in expand_use(m.group(1))]
        paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
        for m in re.finditer(r"(?<![:\w])(\w+)((?:::\w+)+)", text):
            if mod + (m.group(1),) in mods:
                paths.append(m.group(0))
        targets = set()
        for raw in paths:
            segs = re.sub(r"\s+as\s+\w+$", "", raw.strip()).split("::")
            if segs[0] == "crate":
                base, segs = [], segs[1:]
            elif segs[0] == "super":
                base = list(mod)
                while segs and segs[0] == "super":
                    base, segs = base[:-1], segs[1:]
            elif segs[0] == "self":
                base, segs = list(mod), segs[1:]
            elif mod + (segs[0],) in mods:
                base = list(mod)
            else:
                continue
            full = base + segs
            target = next(tuple(full[:n]) for n in range(len(full), -1, -1) if tuple(full[:n]) in mods)
            if target not in (mod, ()):
                targets.add(target)
        edges[mod] = targets
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted("/".join(m) for m in component))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def main():
    total = 0
    for src in sys.argv[1:]:
        for component in cycles(edges_of(src)):
            total += 1
            print(f"{src}: import cycle among {', '.join(component)}")
    print(f"import cycles: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks the layout of tributary's crates: the import graph between source files has no cycle,
and no file imports from a folder above its own in the layer order below.

  scripts/module-deps.py            # check; prints the graph's size and exits 1 on a finding
  scripts/module-deps.py --graph    # also print every file's imports

It reads `crate::…` and `super::…` paths (in `use` lines, grouped `use crate::{…}` trees and
inline paths) from every .rs file under src/ and crates/*/src/, resolves each to the file that
defines the module, and builds the graph of files. Comments and string literals are skipped.
A crate of the workspace counts as its own layer, named by its folder.
"""
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent

# Bottom to top: a file may import from its own layer and the layers before it. Within a
# layer, files may import each other as long as there is no cycle.
LAYERS = [
    "protocol",  # pure cores (crates/protocol)
    "config",
    "flow",
    "runtime",
    "clients",
    "cdc",
    "sentiment",
    "pipelines",
    "check",
    "ops",
    "main",
    "testkit",  # crates/testkit: what tests and benches share; nothing in the service uses it
]
# Layers that must not import each other although neither is below the other.
APART = [("cdc", "sentiment")]


# One left-to-right pass, so that whichever starts first wins: a `//` inside a string is not a
# comment, a quote inside a comment or a char literal opens no string.
TOKENS = re.compile(
    r"//[^\n]*"  # line comment
    r"|/\*.*?\*/"  # block comment
    r"|'(?:\\.|[^'\\])'"  # char literal
    r'|\br(#*)"(?:.|\n)*?"\1'  # raw string, to its own closing
    r'|b?"(?:\\.|[^"\\])*"',  # string
    re.S,
)


def strip_comments_and_strings(src: str) -> str:
    return TOKENS.sub(lambda m: '""' if m.group(0).endswith('"') else " ", src)


def expand_use_tree(prefix: str, tree: str):
    """`a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e"""
    tree = tree.strip()
    m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", tree, re.S)
    if not m:
        yield (prefix + "::" + tree) if prefix else tree
        return
    head = m.group(1)
    inner = m.group(3)
    base = "::".join(x for x in (prefix, head) if x)
    depth, cur, parts = 0, "", []
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if p:
            yield from expand_use_tree(base, p)


def module_of(path: pathlib.Path, src_root: pathlib.Path) -> list:
    rel = path.relative_to(src_root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1] if parts[-1] != "main" else ["main"]
    return parts


def main() -> int:
    show = "--graph" in sys.argv
    roots = [("tributary", REPO / "src")]
    for c in sorted((REPO / "crates").glob("*/src")):
        roots.append((c.parent.name, c))
    crate_names = {}
    for name, _ in roots:
        crate_names[name.replace("-", "_")] = name
        crate_names["tributary_" + name.replace("-", "_")] = name
    files = {}  # (crate, tuple(module)) -> path
    for crate, root in roots:
        for f in sorted(root.rglob("*.rs")):
            files[(crate, tuple(module_of(f, root)))] = f

    def resolve(crate, parts):
        for n in range(len(parts), -1, -1):
            key = (crate, tuple(parts[:n]))
            if key in files:
                return key
        return None

    def layer(key):
        crate, mod = key
        if crate != "tributary":
            return crate
        return mod[0] if mod else "lib"

    edges = {k: set() for k in files}
    for key, f in files.items():
        crate, mod = key
        src = strip_comments_and_strings(f.read_text())
        paths = []
        # `use super::*;` is a test module's view of its own file, not an import.
        src = re.sub(r"\buse\s+super::\*\s*;", "", src)
        for m in re.finditer(r"\buse\s+([^;]+);", src):
            paths.extend(expand_use_tree("", m.group(1)))
        paths.extend(re.findall(r"\b(?:crate|super)(?:::\w+)+", src))
        paths.extend(re.findall(r"\btributary(?:_\w+)?(?:::\w+)+", src))
        here = list(mod)
        for p in paths:
            p = re.sub(r"\s+", "", p)
            segs = [s for s in p.split("::") if s]
            if not segs:
                continue
            target_crate = crate
            if segs[0] == "crate":
                parts = segs[1:]
            elif segs[0] == "super":
                base = list(here)
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
                parts = base + segs
            elif segs[0] == "self":
                parts = list(here) + segs[1:]
            elif segs[0] in crate_names and segs[0] != crate.replace("-", "_"):
                target_crate = crate_names[segs[0]]
                if target_crate == "tributary" and crate != "tributary":
                    parts = segs[1:]
                elif target_crate != "tributary":
                    parts = segs[1:]
                else:
                    continue
            else:
                continue
            # `pub use tributary_protocol as protocol` in src/lib.rs: crate::protocol::… is
            # that crate.
            if target_crate == "tributary" and parts and parts[0] in crate_names \
                    and crate_names[parts[0]] != "tributary":
                target_crate, parts = crate_names[parts[0]], parts[1:]
            t = resolve(target_crate, parts)
            if t and t != key and t[1] != ():
                edges[key].add(t)

    def name(k):
        crate, mod = k
        return ("" if crate == "tributary" else crate + ":") + ("::".join(mod) or "lib")

    findings = []
    # Layer order.
    order = {l: i for i, l in enumerate(LAYERS)}
    for a, ts in edges.items():
        la = layer(a)
        for b in ts:
            lb = layer(b)
            if la == lb or la == "lib":
                continue
            if la not in order or lb not in order:
                findings.append(f"unknown layer: {name(a)} -> {name(b)} (add it to LAYERS)")
            elif order[lb] > order[la] or (la, lb) in APART or (lb, la) in APART:
                findings.append(f"upward import: {name(a)} ({la}) -> {name(b)} ({lb})")
    # Cycles (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            strong(v)
    for comp in sccs:
        findings.append("import cycle: " + " <-> ".join(sorted(name(c) for c in comp)))
    if show:
        for k in sorted(edges, key=name):
            print(f"{name(k)} -> {', '.join(sorted(name(t) for t in edges[k]))}")
    n_edges = sum(len(t) for t in edges.values())
    print(f"module-deps: {len(files)} files, {n_edges} imports between them, "
          f"{len(findings)} findings")
    for f in findings:
        print("module-deps: " + f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

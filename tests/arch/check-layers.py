#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Dependencies run one way (issue 11), checked on what the compiler built.

For every object file of src/ in the build tree, `nm` tells which functions
and data it defines and which it uses. Each use of a symbol that another of
our files defines is an edge between two source files. The check fails when

  * the edges make a cycle (two files, or more, that need each other), or
  * a file uses a file of a layer it may not use (LAYERS below: a folder of
    src/ may use itself and the folders it lists, nothing else), or
  * the #include lines of src/ make a cycle between headers, or a file
    includes a header of a layer it may not use.

Usage: check-layers.py SOURCE_ROOT BUILD_ROOT   (exit status 0: clean)
"""

import collections
import re
import subprocess
import sys
from pathlib import Path

# folder -> folders it may use (besides itself)
LAYERS = {
    "common": set(),
    "policy": {"common"},
    "session": {"common", "policy"},
    "firewall": {"common", "policy"},
    "server": {"common", "policy", "firewall"},
    "daemon": {"common", "policy", "session", "firewall", "server"},
    "ctl": {"common", "policy"},
}


def layer_of(path):
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part == "src" and i + 1 < len(parts) and parts[i + 1] in LAYERS:
            return parts[i + 1]
    return None


def find_cycles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def symbol_graph(source_root, build_root):
    """source file (relative to src/) -> {source files whose symbols it uses}"""
    defined, used = {}, collections.defaultdict(set)
    sources = {p.name: p.relative_to(source_root / "src")
               for p in (source_root / "src").rglob("*.c")}
    objects = [o for o in (build_root / "src").rglob("*.c.o")
               if o.name[:-2] in sources]
    if not objects:
        sys.exit(f"no object files of src/ under {build_root}/src: build first")
    for obj in objects:
        source = str(sources[obj.name[:-2]])
        out = subprocess.run(["nm", str(obj)], check=True, capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in "TDRBC":
                defined[fields[2]] = source
            elif len(fields) == 2 and fields[0] == "U":
                used[source].add(fields[1])
    edges = collections.defaultdict(set)
    why = {}
    for source, symbols in used.items():
        for symbol in symbols:
            target = defined.get(symbol)
            if target is not None and target != source:
                edges[source].add(target)
                why.setdefault((source, target), symbol)
    return edges, why


def include_graph(source_root):
    """file (relative to src/) -> {headers it includes}, headers by name"""
    files = {p.relative_to(source_root / "src"): p
             for p in (source_root / "src").rglob("*.[ch]")}
    headers = {p.name: rel for rel, p in files.items() if p.suffix == ".h"}
    edges = collections.defaultdict(set)
    for rel, p in files.items():
        for name in re.findall(r'^#include "([^"]+)"', p.read_text(), re.M):
            if name in headers and headers[name] != rel:
                edges[str(rel)].add(str(headers[name]))
    return edges


def layer_violations(edges, why=None):
    problems = []
    for source, targets in sorted(edges.items()):
        a = layer_of("src/" + source)
        for target in sorted(targets):
            b = layer_of("src/" + target)
            if a is None or b is None or a == b:
                continue
            if b not in LAYERS[a]:
                detail = f" ({why[(source, target)]})" if why else ""
                problems.append(f"{source} uses {target}{detail}: the {a} layer may "
                                f"not use {b}")
    return problems


def main():
    source_root, build_root = Path(sys.argv[1]), Path(sys.argv[2])
    problems = []
    symbols, why = symbol_graph(source_root, build_root)
    for cycle in find_cycles(symbols):
        pairs = [f"{a} -> {b} ({why[(a, b)]})" for a in cycle for b in cycle
                 if b in symbols.get(a, ())]
        problems.append("files that need each other: " + ", ".join(pairs))
    problems += layer_violations(symbols, why)
    includes = include_graph(source_root)
    for cycle in find_cycles(includes):
        problems.append("headers that include each other: " + ", ".join(cycle))
    problems += layer_violations(includes)

    n_edges = sum(len(t) for t in symbols.values())
    print(f"{len(symbols)} files, {n_edges} uses between files, "
          f"{sum(len(t) for t in includes.values())} includes")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

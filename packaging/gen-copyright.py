#!/usr/bin/env python3
"""Writes the Debian copyright file: packaging/debian/copyright.in with its @BUNDLED_CRATES@
line replaced by the crates statically linked into /usr/bin/signalbox (name, version and
declared license), read from `cargo metadata`, i.e. from Cargo.lock as it is built.

Usage: gen-copyright.py COPYRIGHT_IN OUT  (run from the workspace; packaging/build-deb.sh does)
"""
import json
import subprocess
import sys


def linked_crates(metadata):
    """The normal (not build-, not dev-) dependency closure of `signalbox`, without
    proc-macro crates, which run in the compiler and are not part of the binary."""
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    root = next(i for i, p in packages.items() if p["name"] == "signalbox" and p["source"] is None)
    seen, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for dep in nodes[pid]["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    crates = []
    for pid in seen:
        p = packages[pid]
        if p["source"] is None:  # signalbox, signalbox-turn: covered by `Files: *`
            continue
        if all("proc-macro" in t["kind"] for t in p["targets"]):
            continue
        crates.append((p["name"], p["version"], p.get("license") or "see the crate"))
    return sorted(crates)


def main():
    template, out = sys.argv[1], sys.argv[2]
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked",
             "--filter-platform", "x86_64-unknown-linux-gnu"],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    lines = "\n".join(f" {n} {v}: {lic}" for n, v, lic in linked_crates(metadata))
    text = open(template, encoding="utf-8").read()
    if "@BUNDLED_CRATES@" not in text:
        sys.exit("gen-copyright: no @BUNDLED_CRATES@ line in " + template)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text.replace("@BUNDLED_CRATES@", lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Summarises a `cargo build --timings` report: wall time, compilation units, CPU-busy time
(the sum of unit durations) and the critical path (the chain of units, each waiting on the
last of its dependencies to finish, that ends with the last unit).

    python3 bench/build_timings.py target/cargo-timings/cargo-timing.html [--top 12]

Used for docs/dependencies.md (from-scratch release build time before and after a change).
"""
import argparse
import json
import re
import sys


def load(path):
    text = open(path, encoding="utf-8").read()
    m = re.search(r"const UNIT_DATA = (\[.*?\]);\n", text, re.S)
    if not m:
        sys.exit(f"{path}: no UNIT_DATA (not a cargo --timings report?)")
    units = json.loads(m.group(1))
    d = re.search(r"DURATION = ([0-9.]+);", text)
    return units, float(d.group(1)) if d else max(u["start"] + u["duration"] for u in units)


def label(u):
    mode = "" if u.get("mode") in (None, "todo") else f" ({u['mode']})"
    target = u.get("target", "").strip()
    return f"{u['name']} {u['version']}{(' ' + target) if target else ''}{mode}"


def critical_path(units):
    """The chain that ends the build: from the last unit, back through the unit whose finish
    unblocked it (cargo records, for each unit, the units it was the last dependency of), to a
    unit nothing blocked. A gap between a unit's unblocking and its start is time it waited
    for a job slot (-j, the machine's cores)."""
    by_i = {u["i"]: u for u in units}
    unblocker = {}
    for u in units:
        for v in u.get("unblocked_units", []) + u.get("unblocked_rmeta_units", []):
            unblocker[v] = u["i"]
    last = max(units, key=lambda u: u["start"] + u["duration"])
    path = [last]
    while path[-1]["i"] in unblocker:
        path.append(by_i[unblocker[path[-1]["i"]]])
    return list(reversed(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("--top", type=int, default=12, help="the longest units to list")
    a = ap.parse_args()
    units, wall = load(a.report)
    busy = sum(u["duration"] for u in units)
    crates = {(u["name"], u["version"]) for u in units}
    print(f"wall {wall:.0f} s; {len(units)} units of {len(crates)} crates; sum of unit durations {busy:.0f} s "
          f"(average parallelism {busy / wall:.2f})")
    path = critical_path(units)
    print(f"critical path: {len(path)} units, {sum(u['duration'] for u in path):.0f} s of their own time, "
          f"from {path[0]['start']:.0f} s (before it: units waiting for a job slot):")
    prev_end = None
    for u in path:
        gap = None if prev_end is None else u["start"] - prev_end
        wait = "" if gap is None else (f"  (waited {gap:.1f} s for a slot)" if gap >= 0 else "  (pipelined: started on its dependency's metadata)")
        print(f"  {u['start']:7.1f} s  +{u['duration']:6.1f} s  {label(u)}{wait}")
        prev_end = u["start"] + u["duration"]
    print(f"longest {a.top} units:")
    for u in sorted(units, key=lambda u: -u["duration"])[:a.top]:
        print(f"  {u['duration']:6.1f} s  {label(u)}")


if __name__ == "__main__":
    main()

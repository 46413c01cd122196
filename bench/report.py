"""Tabulate a pytest-benchmark JSON of bench_search.py as the tables of bench/README.md.

    python bench/report.py bench/results.json

Search rows: median time, and that time in plain forwards, in training steps, and as a
speed-up over the naive loop at the same model, batch and K. Accumulate rows: GB/s.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    runs = json.load(open(path))["benchmarks"]
    base = {}
    search = defaultdict(dict)
    accumulate = []
    for r in runs:
        info, median = r["extra_info"], r["stats"]["median"]
        if info.get("kind") in ("forward", "train"):
            base[(info["model"], info["batch"], info["kind"])] = median
        elif info.get("kind") == "search":
            search[(info["model"], info["batch"], info["k"])][info["mode"]] = median
        elif info.get("kind") == "accumulate":
            accumulate.append(info | {"median": median})
    device = runs[0]["extra_info"].get("device", "?") if runs else "?"
    print(f"### Search step ({device})\n")
    print("| model | batch | K | mode | median ms | × forward | × train step | × faster than naive |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for (model, batch, k), modes in sorted(search.items()):
        fwd, train = base.get((model, batch, "forward")), base.get((model, batch, "train"))
        naive = modes.get("naive")
        for mode in ("naive", "vmap", "cpp", "triton"):
            if mode not in modes:
                continue
            t = modes[mode]
            cells = [f"{t / fwd:.1f}" if fwd else "", f"{t / train:.1f}" if train else "",
                     f"{naive / t:.1f}" if naive else ""]
            print(f"| {model} | {batch} | {k} | {mode} | {t * 1e3:.2f} | " + " | ".join(cells) + " |")
    print("\n| model | batch | forward ms | train step ms |\n|---|---:|---:|---:|")
    for (model, batch) in sorted({(m, b) for m, b, _ in base}):
        print(f"| {model} | {batch} | {base[(model, batch, 'forward')] * 1e3:.2f} | "
              f"{base[(model, batch, 'train')] * 1e3:.2f} |")
    if accumulate:
        print(f"\n### Significance accumulation ({device})\n")
        print("| rule | K | elements | median ms | GB/s (state read + written) |")
        print("|---|---:|---:|---:|---:|")
        for a in sorted(accumulate, key=lambda a: (a["rule"], a["k"])):
            print(f"| {a['rule']} | {a['k']} | {a['elements']:,} | {a['median'] * 1e3:.2f} | "
                  f"{a['bytes'] / a['median'] / 1e9:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json")

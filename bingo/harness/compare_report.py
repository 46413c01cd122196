"""``bingo compare``'s outputs: the markdown table (with the sanity checks'), the plot of
accuracy against sparsity, and the files they are written to."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List


def markdown_table(results: Dict[str, Any]) -> str:
    """Test accuracy (text: validation loss) per sparsity, sparsity at the floor, and wall
    time (also vs IMP)."""
    cfg = results["config"]
    sparsities = cfg["sparsities"]
    floor = cfg["min_accuracy"]
    key, label, cell = headline(results)
    imp_seconds = next((m["seconds"] for m in results["methods"] if m["method"] == "imp"), None)
    head = ["method"] + [f"{label} @ {s:.0%}" for s in sparsities]
    if floor is not None:
        head += [f"sparsity @ val ≥ {floor:.0%}", "its test acc"]
    head += ["seconds", "× IMP time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for m in results["methods"]:
        by_s = {p["sparsity"]: p[key] for p in m["points"]}
        row = [m["method"]] + [cell(by_s[s]) if s in by_s else "" for s in sparsities]
        if floor is not None:
            t = m["threshold"]
            row += ([f"{100 * t['sparsity']:.1f}%", f"{100 * t['test_accuracy']:.2f}%"]
                    if t else ["none", ""])
        row += [f"{m['seconds']:.1f}",
                f"{m['seconds'] / imp_seconds:.2f}" if imp_seconds else ""]
        lines.append("| " + " | ".join(row) + " |")
    dense_key = "dense_val_loss" if key == "val_loss" else "dense_test_accuracy"
    dense = [m[dense_key] for m in results["methods"] if m.get(dense_key)]
    note = f"\nDense {label}: {cell(dense[0])}." if dense else ""
    return "\n".join(lines) + "\n" + note + "\n" + sanity_table(results.get("sanity") or [])


def headline(results: Dict[str, Any]):
    """(point key, label, cell format) of a comparison's headline figure: test accuracy, or
    the validation loss of a text run (lower is better)."""
    points = [p for m in results["methods"] for p in m["points"]]
    if points and "val_loss" in points[0]:
        return "val_loss", "val loss", lambda v: f"{v:.4f}"
    return "test_accuracy", "test acc", lambda v: f"{100 * v:.2f}%"


def sanity_table(sanity: List[Dict[str, Any]]) -> str:
    """Ticket accuracy per method and each check's change (percentage points)."""
    if not sanity:
        return ""
    from .sanity import CHECKS
    lines = [f"\nSanity checks (Su et al. 2020) at sparsity {sanity[0]['sparsity']:.0%}: the "
             f"ticket (mask on the initial weights, trained) and each check's change of its "
             f"test accuracy, in percentage points (n/a: the method never sees the data).\n",
             "| method | ticket test acc | " + " | ".join(CHECKS) + " |",
             "|---|---:|" + "---:|" * len(CHECKS)]
    for r in sanity:
        cells = ["n/a" if r["checks"].get(c) is None else f"{100 * r['checks'][c]['change']:+.2f}"
                 for c in CHECKS]
        lines.append(f"| {r['method']} | {100 * r['test_accuracy']:.2f}% | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def plot(results: Dict[str, Any], path: Path) -> None:
    """Test accuracy against sparsity, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    key, label, _ = headline(results)
    scale = 1 if key == "val_loss" else 100
    for m in results["methods"]:
        pts = sorted((p["sparsity"], p[key]) for p in m["points"])
        if pts:
            ax.plot([100 * s for s, _ in pts], [scale * a for _, a in pts], marker="o",
                    label=m["method"])
    ax.set_xlabel("sparsity (% of prunable weights removed)")
    ax.set_ylabel("validation loss" if key == "val_loss" else "test accuracy (%)")
    ax.set_title(f"{results['config']['model']} on {results['config']['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: Dict[str, Any], out: Path) -> Dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "table": out / "results.md",
             "plot": out / "accuracy_vs_sparsity.png"}
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["table"].write_text(f"# {results['name']}\n\n" + markdown_table(results))
    plot(results, paths["plot"])
    return paths

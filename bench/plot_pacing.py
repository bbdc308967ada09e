"""Plots of a ``bench.pacing --json`` run: staleness, 429s and edits per contender.

Kept apart from the run so the figures can be redrawn without re-running minutes
of scaled streaming, and so matplotlib is only needed for the pictures.

Run: ``python -m bench.plot_pacing results.json`` (writes ``bench/plots/*.png``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).parent / "plots"


def grouped(ax: Any, rows: list[dict[str, Any]], value: str, label: str, log: bool = False) -> None:
    """Bars per scenario (x) and contender (colour)."""
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    contenders = list(dict.fromkeys(r["contender"] for r in rows))
    width = 0.8 / len(contenders)
    for i, contender in enumerate(contenders):
        heights = []
        for scenario in scenarios:
            row = next(r for r in rows if r["scenario"] == scenario and r["contender"] == contender)
            node: Any = row
            for key in value.split("."):
                node = node[key]
            heights.append(max(float(node), 1e-3) if log else float(node))
        xs = [x + (i - (len(contenders) - 1) / 2) * width for x in range(len(scenarios))]
        ax.bar(xs, heights, width, label=contender)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([s.replace(", ", "\n", 1) for s in scenarios], fontsize=7)
    ax.set_ylabel(label)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.1)
    ax.grid(axis="y", alpha=0.3)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("results", help="the file written by bench.pacing --json")
    args = parser.parse_args(argv)
    data = json.loads(Path(args.results).read_text())
    rows = data["rows"]
    OUT.mkdir(exist_ok=True)
    panels = [
        ("staleness.p50", "staleness p50 (s, log)", True),
        ("staleness.p99", "staleness p99 (s, log)", True),
        ("rate_limited", "429 responses", False),
        ("updates_per_reply", "edits / appends per reply", False),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 14))
    for ax, (value, label, log) in zip(axes, panels, strict=True):
        grouped(ax, rows, value, label, log)
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(
        f"chatrelay vs reference pacing ({data['date']}, time ×{data['args']['scale']:g}, "
        "figures in platform seconds)"
    )
    fig.tight_layout()
    fig.savefig(OUT / "pacing.png", dpi=110)
    print(f"wrote {OUT / 'pacing.png'}")


if __name__ == "__main__":
    main()

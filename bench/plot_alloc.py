#!/usr/bin/env python3
"""Plots an allocator benchmark JSON file (//bench:alloc).

usage: python3 bench/plot_alloc.py bench/alloc.json bench/alloc.png

Left: allocations per second against block size, one line per allocator
and thread count (steady state, median of the rounds). Middle: frees, in
order and in random order. Right: churn pairs per second. Rows that timed
out or were skipped are left out (their status is in the JSON).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"grosr_slab": "-", "cuda_malloc": "--", "cuda_malloc_async": ":"}


def main(source, target):
    with open(source) as f:
        data = json.load(f)
    rows = [r for r in data["rows"] if r["status"] == "ok"]
    # A row that only had time for its cold round has no steady-state rate.
    sweep = [r for r in rows if r["workload"] == "alloc_free" and r["alloc_mops"] > 0]
    churn = [r for r in rows if r["workload"] == "churn" and r["pairs_per_s"] > 0]
    fig, (alloc_ax, free_ax, churn_ax) = plt.subplots(1, 3, figsize=(18, 5.5))
    series = sorted({(r["allocator"], r["threads"]) for r in sweep})
    for allocator, threads in series:
        points = sorted((r for r in sweep if r["allocator"] == allocator and r["threads"] == threads),
                        key=lambda r: r["bytes"])
        label = f"{allocator}, {threads:,} threads"
        style = STYLE.get(allocator, "-")
        sizes = [r["bytes"] for r in points]
        alloc_ax.plot(sizes, [r["alloc_mops"] for r in points], style, marker="o", label=label)
        free_ax.plot(sizes, [r["free_mops"] for r in points], style, marker="o", label=label)
        if allocator == "grosr_slab":
            free_ax.plot(sizes, [r["free_random_mops"] for r in points], style, marker="x",
                         alpha=0.5, label=f"{label}, random order")
    for ax, what in ((alloc_ax, "allocations"), (free_ax, "frees")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bytes per block")
        ax.set_ylabel(f"M {what}/s (steady state, median)")
        ax.grid(True, which="both", alpha=0.3)
    alloc_ax.legend(fontsize=7)
    free_ax.legend(fontsize=6)
    alloc_ax.set_title("allocate")
    free_ax.set_title("free")
    names = [f"{r['allocator']}\n{r['threads']:,}" for r in churn]
    churn_ax.bar(names, [r["pairs_per_s"] / 1e6 for r in churn],
                 color=["tab:blue" if r["allocator"] == "grosr_slab" else "tab:gray" for r in churn])
    churn_ax.set_ylabel("M malloc+free pairs/s")
    churn_ax.set_title("churn: 100 rounds of 16-1024 B per thread")
    churn_ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"{data['device']}, pool {data['pool_bytes'] >> 30} GiB, commit "
                 f"{data.get('commit', '?')}, {data.get('date', '')}")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""Plots a benchmark JSON file (grosr_bench, pingpong or throughput).

usage: python3 bench/plot.py bench/results.json bench/results.png

Writes results.png (experiment A: per-step latency bars, log scale, bar to
p99; experiment B: tasks/s against the number of tasks, log-log; other
rates) and results-cdf.png (the latency distribution of every series that
kept its samples). Grey/dashed: CUDA; blue/solid: GROSR.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def is_cuda(name):
    return name.startswith(("cuda", "pinned", "tput_cuda"))


def latency_bars(ax, latency):
    names = [r["name"] for r in latency]
    colors = ["tab:gray" if is_cuda(n) else "tab:blue" for n in names]
    ax.barh(names, [r["median"] for r in latency], color=colors,
            xerr=[[0] * len(latency), [r["p99"] - r["median"] for r in latency]])
    ax.set_xscale("log")
    ax.set_xlabel("µs per dependent step (median, bar to p99)")
    ax.invert_yaxis()
    for i, r in enumerate(latency):
        ax.text(r["median"], i, f" {r['median']:.3g}", va="center", fontsize=8)
    ax.set_title("A: dependent dispatch")


def throughput_lines(ax, sweep):
    groups = {}
    for r in sweep:
        groups.setdefault(r["group"], []).append(r)
    for group, points in groups.items():
        points.sort(key=lambda r: r["items"])
        ax.plot([r["items"] for r in points], [r["median"] for r in points],
                marker="o", linestyle="--" if is_cuda(group) else "-", label=group)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tasks per run")
    ax.set_ylabel("tasks/s (median)")
    ax.legend(fontsize=8)
    ax.set_title("B: tiny-task throughput")


def cdf(ax, series):
    for r in series:
        raw = sorted(r["raw"])
        n = len(raw)
        ax.plot(raw, [(i + 1) / n for i in range(n)],
                linestyle="--" if is_cuda(r["name"]) else "-",
                label=f"{r['name']} ({r['samples']} samples)")
    ax.set_xscale("log")
    ax.set_xlabel("µs per step")
    ax.set_ylabel("fraction of samples ≤ x")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def main(source, target):
    with open(source) as f:
        data = json.load(f)
    results = data["results"]
    latency = [r for r in results if r["unit"] == "us" and r.get("experiment", "A") == "A"
               and not r["name"].startswith("grosr_load")]
    sweep = [r for r in results if r.get("experiment") == "B"]
    rates = [r for r in results if r["unit"] == "tasks/s" and r.get("experiment") != "B"]
    panels = [p for p, present in (("A", latency), ("B", sweep), ("rates", rates)) if present]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "A":
            latency_bars(ax, latency)
        elif panel == "B":
            throughput_lines(ax, sweep)
        else:
            ax.bar([r["name"].replace("grosr_", "") for r in rates],
                   [r["median"] / 1e6 for r in rates], color="tab:blue")
            ax.set_ylabel("M tasks/s")
            ax.set_title("other rates")
    title = (f"{data['device']} ({data['sms']} SMs), driver {data['driver']}, "
             f"commit {data.get('commit', '?')}, {data.get('date', '')}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")

    with_samples = [r for r in latency if len(r.get("raw", [])) >= 20]
    if with_samples:
        fig, ax = plt.subplots(figsize=(10, 6))
        cdf(ax, with_samples)
        ax.set_title("A: latency distribution (CDF) — " + title)
        fig.tight_layout()
        cdf_target = target[:-4] + "-cdf.png" if target.endswith(".png") else target + "-cdf.png"
        fig.savefig(cdf_target, dpi=110)
        print(f"wrote {cdf_target}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

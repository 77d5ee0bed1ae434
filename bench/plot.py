#!/usr/bin/env python3
"""Plots a grosr_bench JSON file: per-step latencies (log scale) and rates.

usage: python3 bench/plot.py bench/results.json bench/results.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source, target):
    with open(source) as f:
        data = json.load(f)
    latency = [r for r in data["results"] if r["unit"] == "us"]
    rates = [r for r in data["results"] if r["unit"] == "tasks/s"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8),
                                      gridspec_kw={"width_ratios": [3, 1]})
    names = [r["name"] for r in latency]
    colors = ["tab:gray" if n.startswith(("cuda", "pinned")) else "tab:blue" for n in names]
    left.barh(names, [r["median"] for r in latency], color=colors,
              xerr=[[0] * len(latency),
                    [r["p99"] - r["median"] for r in latency]])
    left.set_xscale("log")
    left.set_xlabel("microseconds per step (median, bar to p99); grey: CUDA")
    left.invert_yaxis()
    for i, r in enumerate(latency):
        left.text(r["median"], i, f" {r['median']:.3g}", va="center")
    right.bar([r["name"].replace("grosr_", "") for r in rates],
              [r["median"] / 1e6 for r in rates], color="tab:blue")
    right.set_ylabel("M tasks/s")
    fig.suptitle(f"{data['device']} ({data['sms']} SMs), driver {data['driver']}")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""Issue 35's table: two trainers (wick, PEFT) over seeds, scored on the same test examples.

    python3 bench/parity_table.py --a wick S0/predictions.jsonl S1/... --b peft P0/predictions.jsonl P1/...

Prints per-seed test accuracies with 95% Wilson intervals, each side's mean, the difference of
means (a - b) with a 95% bootstrap interval that resamples both seeds (within each side) and
examples (the same draw for both sides, since they score the same examples), and each seed's
paired comparison (a's seed i against b's seed i: difference and exact McNemar p). The seeds of
a and b are different random draws, so seed i of one side is paired with seed i of the other only
for the per-seed row; the difference of means is the figure the issue asks for.
"""
import argparse
import math
import random
import statistics

from agreement import mcnemar_exact, read


def wilson(k, n, z=1.96):
    """95% Wilson interval of a proportion k/n."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def correctness(path):
    rows = read(path)
    return [r["text"] for r in rows], [int(r["gold"] == r["predicted"]) for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", nargs="+", required=True, help="NAME then one predictions.jsonl per seed")
    ap.add_argument("--b", nargs="+", required=True, help="NAME then one predictions.jsonl per seed")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sides = []
    texts = None
    for spec in (args.a, args.b):
        name, paths = spec[0], spec[1:]
        runs = []
        for path in paths:
            t, c = correctness(path)
            if texts is None:
                texts = t
            elif t != texts:
                raise SystemExit(f"{path}: not the same examples in the same order as {args.a[1]}")
            runs.append(c)
        sides.append((name, runs))
    n = len(texts)
    (name_a, runs_a), (name_b, runs_b) = sides

    print(f"{n} test examples\n")
    print(f"| seed | {name_a} | {name_b} | {name_a} − {name_b} (paired) | McNemar p |")
    print("|---|---|---|---|---|")
    for i in range(max(len(runs_a), len(runs_b))):
        cells = []
        for runs in (runs_a, runs_b):
            if i < len(runs):
                k = sum(runs[i])
                lo, hi = wilson(k, n)
                cells.append(f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
            else:
                cells.append("–")
        if i < len(runs_a) and i < len(runs_b):
            a, b = runs_a[i], runs_b[i]
            only_a = sum(x and not y for x, y in zip(a, b))
            only_b = sum(y and not x for x, y in zip(a, b))
            diff = 100 * (only_a - only_b) / n
            cells += [f"{diff:+.1f} ({only_a} vs {only_b} discordant)", f"{mcnemar_exact(only_a, only_b):.3f}"]
        else:
            cells += ["–", "–"]
        print(f"| {i} | " + " | ".join(cells) + " |")

    def mean_acc(runs, idx, seeds):
        return statistics.fmean(sum(runs[s][j] for j in idx) / len(idx) for s in seeds)

    everything = list(range(n))
    ma = mean_acc(runs_a, everything, range(len(runs_a)))
    mb = mean_acc(runs_b, everything, range(len(runs_b)))
    rng = random.Random(args.seed)
    diffs = []
    for _ in range(args.resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        sa = [rng.randrange(len(runs_a)) for _ in runs_a]
        sb = [rng.randrange(len(runs_b)) for _ in runs_b]
        diffs.append(mean_acc(runs_a, idx, sa) - mean_acc(runs_b, idx, sb))
    diffs.sort()
    lo, hi = diffs[int(0.025 * len(diffs))], diffs[int(0.975 * len(diffs)) - 1]
    per_a = [100 * sum(r) / n for r in runs_a]
    per_b = [100 * sum(r) / n for r in runs_b]
    print()
    print(f"{name_a}: mean {100 * ma:.2f}% over {len(runs_a)} seeds (seed sd {statistics.stdev(per_a) if len(per_a) > 1 else 0:.2f} points)")
    print(f"{name_b}: mean {100 * mb:.2f}% over {len(runs_b)} seeds (seed sd {statistics.stdev(per_b) if len(per_b) > 1 else 0:.2f} points)")
    print(
        f"{name_a} − {name_b}, difference of means: {100 * (ma - mb):+.2f} points, 95% bootstrap interval "
        f"[{100 * lo:+.2f}, {100 * hi:+.2f}] (half-width {50 * (hi - lo):.2f}; {args.resamples} resamples of seeds and examples)"
    )


if __name__ == "__main__":
    main()

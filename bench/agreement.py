#!/usr/bin/env python3
"""Compare two predictions.jsonl files of the same examples (e.g. wick's f32 and bf16 paths):
prediction agreement, the largest label-probability difference, each side's accuracy, and the
paired accuracy difference (b − a) with its 95% interval and the exact McNemar p.

    python3 bench/agreement.py A/predictions.jsonl B/predictions.jsonl
"""
import json
import math
import sys


def read(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def mcnemar_exact(b, c):
    """Two-sided exact McNemar p from the discordant counts."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def margin(row):
    """How far the top label probability leads the next."""
    p = sorted(row["probabilities"].values(), reverse=True)
    return p[0] - (p[1] if len(p) > 1 else 0.0)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = read(sys.argv[1]), read(sys.argv[2])
    if len(a) != len(b) or any(x["text"] != y["text"] for x, y in zip(a, b)):
        sys.exit("agreement: the two files do not hold the same examples in the same order")
    n = len(a)
    agree = sum(x["predicted"] == y["predicted"] for x, y in zip(a, b))
    dp = max(abs(x["probabilities"][k] - y["probabilities"][k]) for x, y in zip(a, b) for k in x["probabilities"])
    ra = [x["predicted"] == x["gold"] for x in a]
    rb = [y["predicted"] == y["gold"] for y in b]
    only_b = sum(q and not p for p, q in zip(ra, rb))
    only_a = sum(p and not q for p, q in zip(ra, rb))
    d = [int(q) - int(p) for p, q in zip(ra, rb)]
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / max(n - 1, 1))
    half = 1.96 * sd / math.sqrt(n)
    # Near-ties flip under any rounding: agreement where side a's top label leads by ≥ 0.02.
    sure = [(x, y) for x, y in zip(a, b) if margin(x) >= 0.02]
    agree_sure = sum(x["predicted"] == y["predicted"] for x, y in sure)
    print(f"n = {n}: agreement {agree}/{n} = {100 * agree / n:.1f}%; largest label-probability difference {dp:.4f}; "
          f"agreement where a's top probability leads the next by ≥ 0.02: {agree_sure}/{len(sure)}")
    print(f"accuracy {100 * sum(ra) / n:.1f}% (a) against {100 * sum(rb) / n:.1f}% (b); "
          f"b − a = {100 * mean:+.1f} points [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}], "
          f"discordant {only_b} against {only_a}, exact McNemar p = {mcnemar_exact(only_b, only_a):.3f}")


if __name__ == "__main__":
    main()

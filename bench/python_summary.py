"""Medians and the issue-16 ratios of a bench/python.sh run.

usage: python3 bench/python_summary.py RESULTS   (lines `label RESULT {json}`)
"""

import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            label, _, payload = line.partition(" RESULT ")
            if payload:
                runs[label].append(json.loads(payload))

    def median(label, field):
        values = [r[field] for r in runs.get(label, []) if field in r]
        return statistics.median(values) if values else None

    def all_of(label, field):
        return " / ".join(str(r[field]) for r in runs.get(label, []))

    print("== medians (every round in brackets)")
    for label, fields in (
        ("official-sync", ("msgs_per_s", "connect_ms", "import_ms", "peak_rss_kib")),
        ("ours-sync", ("msgs_per_s", "connect_ms", "import_ms", "peak_rss_kib")),
        ("official-async", ("msgs_per_s", "connect_ms", "import_ms", "peak_rss_kib")),
        ("ours-async", ("msgs_per_s", "connect_ms", "import_ms", "peak_rss_kib")),
        ("rust-seq", ("msgs_per_s", "peak_rss_kib")),
        ("rust-conc", ("msgs_per_s", "peak_rss_kib")),
        ("official-service", ("creates_per_s", "twins_per_s", "import_ms", "peak_rss_kib")),
        ("ours-service", ("creates_per_s", "twins_per_s", "import_ms", "peak_rss_kib")),
    ):
        if label in runs:
            parts = [f"{field} {median(label, field)} [{all_of(label, field)}]" for field in fields]
            print(f"{label}: " + "; ".join(parts))

    print("== ratios of medians against the targets")

    def ratio(name, numerator, denominator, target, higher_is_better=True):
        if numerator is None or denominator is None or denominator == 0:
            print(f"{name}: not measured")
            return
        value = numerator / denominator
        met = value >= target if higher_is_better else value <= target
        sign = ">=" if higher_is_better else "<="
        print(f"{name}: {value:.2f} (target {sign} {target}): {'met' if met else 'MISSED'}")

    ratio("sync msgs/s, ours / official", median("ours-sync", "msgs_per_s"), median("official-sync", "msgs_per_s"), 3)
    # Not a target: how close sync comes to the hub's own per-acknowledgement bound.
    seq = median("rust-seq", "msgs_per_s")
    if seq:
        print(f"(sync msgs/s, ours / Rust client awaiting each ack: {median('ours-sync', 'msgs_per_s') / seq:.2f}; "
              f"official / Rust client: {median('official-sync', 'msgs_per_s') / seq:.2f})")
    ratio("async msgs/s, ours / official", median("ours-async", "msgs_per_s"), median("official-async", "msgs_per_s"), 10)
    ratio("async msgs/s, ours / Rust client", median("ours-async", "msgs_per_s"), median("rust-conc", "msgs_per_s"), 0.5)
    for mode in ("sync", "async"):
        ratio(f"peak RSS ({mode}), ours / official", median(f"ours-{mode}", "peak_rss_kib"),
              median(f"official-{mode}", "peak_rss_kib"), 0.5, higher_is_better=False)
        ratio(f"import + connect ({mode}), ours / official", median(f"ours-{mode}", "connect_ms"),
              median(f"official-{mode}", "connect_ms"), 0.2, higher_is_better=False)
    ratio("device creates/s, ours / official", median("ours-service", "creates_per_s"),
          median("official-service", "creates_per_s"), 3)
    ratio("twin reads/s, ours / official", median("ours-service", "twins_per_s"),
          median("official-service", "twins_per_s"), 3)


if __name__ == "__main__":
    main(sys.argv[1])

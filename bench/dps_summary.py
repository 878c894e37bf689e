"""Medians and ratios of a bench/dps.sh run.

usage: python3 bench/dps_summary.py RESULTS   (lines `label RESULT {json}` and `label USAGE {json}`)
"""

import json
import statistics
import sys
from collections import defaultdict

LABELS = ("ours-mqtt", "ours-https", "python-mqtt", "python-mqtt-wide")
FIELDS = (
    ("per_s", "registrations/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("client_cpu_s", "client CPU s"),
    ("emulator_cpu_s", "emulator CPU s"),
    ("emulator_rss_before_kib", "emulator RSS before KiB"),
    ("emulator_peak_rss_kib", "emulator peak RSS KiB"),
)


def main(path):
    runs = defaultdict(lambda: defaultdict(list))
    with open(path, encoding="utf-8") as f:
        for line in f:
            label, _, rest = line.strip().partition(" ")
            kind, _, payload = rest.partition(" ")
            if kind in ("RESULT", "USAGE"):
                for field, value in json.loads(payload).items():
                    runs[label][field].append(value)

    def median(label, field):
        values = runs.get(label, {}).get(field)
        return statistics.median(values) if values else None

    print("== medians (every round in brackets)")
    for label in LABELS:
        if label not in runs:
            continue
        parts = []
        for field, name in FIELDS:
            values = runs[label].get(field)
            if values:
                rounds = " / ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in values)
                parts.append(f"{name} {median(label, field):.1f} [{rounds}]")
        count = runs[label]["count"][0]
        per_registration = [
            c / n for c, n in zip(runs[label].get("emulator_cpu_s", []), runs[label].get("assigned", [])) if n
        ]
        growth = [
            peak - before
            for before, peak in zip(runs[label].get("emulator_rss_before_kib", []), runs[label].get("emulator_peak_rss_kib", []))
        ]
        if growth:
            parts.append(f"emulator RSS growth KiB {statistics.median(growth):.0f} [{' / '.join(map(str, growth))}]")
        if per_registration:
            parts.append(f"emulator CPU per registration {statistics.median(per_registration) * 1000:.2f} ms")
        print(f"{label} ({count} registrations): " + "; ".join(parts))

    print("== ratios of medians")
    for label in ("ours-mqtt", "ours-https"):
        for peer in ("python-mqtt", "python-mqtt-wide"):
            ours, theirs = median(label, "per_s"), median(peer, "per_s")
            if ours and theirs:
                print(f"registrations/s, {label} / {peer}: {ours / theirs:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])

"""The table benchmarks/rounds_synthetic.py prints: each row's mean over seeds with the
per-seed values, then the paired gaps between rows (mean ± standard error over seeds)."""
from __future__ import annotations

import statistics

GAPS = (("b", "a"), ("b", "a-single"), ("b", "a-restart"), ("b", "a-continue"), ("c-tta", "b"),
        ("c-noise", "b"), ("c-union", "b"), ("c-init", "b"), ("d", "a"), ("e", "e-control"),
        ("e", "e-single"), ("e", "e-continue"), ("e", "e-own"), ("e-own", "e-control"),
        ("u", "a"), ("e-u", "e-control"))


def print_table(per_seed: list[dict[str, float]], seeds: list[int]) -> None:
    """Each row's mean and per-seed values, then the paired gaps (mean ± SE)."""
    names = list(per_seed[0])
    print(f"{'row':<16}{'mean':>8}  per seed ({', '.join(map(str, seeds))})")
    for name in names:
        values = [r[name] for r in per_seed]
        print(f"{name:<16}{statistics.mean(values):>8.2f}  {' '.join(f'{v:.2f}' for v in values)}")
    for a, b in GAPS:
        if a not in names or b not in names:
            continue
        gaps = [r[a] - r[b] for r in per_seed]
        se = f" ± {statistics.stdev(gaps) / len(gaps) ** 0.5:.2f}" if len(gaps) > 1 else ""
        print(f"{a} - {b}: {statistics.mean(gaps):+.2f}{se}  "
              f"(per seed {' '.join(f'{g:+.2f}' for g in gaps)})")

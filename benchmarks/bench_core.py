"""The Rust core side by side with its peers, in one run: the budget DP against the reference
O(D^3) NumPy algorithm (bench_dp.py) and the rANS coder against constriction (bench_coder.py).

    python benchmarks/bench_core.py
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_coder  # noqa: E402
import bench_dp  # noqa: E402


def main() -> list[str]:
    header = f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; {time.strftime('%Y-%m-%d')}"
    print(header)
    return [header, *bench_dp.main(), *bench_coder.main()]


if __name__ == "__main__":
    main()

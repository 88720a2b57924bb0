"""Cost of checking the cached full MNIST against the official SHA-256 on every load.

Times ``load_mnist("full", cache_dir=DIR, download=False)`` (which hashes each file's
decompressed content) against the same call with the hash replaced by a lookup of
the expected value, and against ``load_idx_dir(DIR)`` (what loading the cache cost
before the check existed). The three are interleaved, so a change in machine load
hits them alike; medians of --runs runs each.

    python benchmarks/cache_check.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

from mnist_xp.data import cache, datasets  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the official full MNIST (the four IDX files, .gz or raw)")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    real_hash = cache._content_sha256
    mnist = datasets.load_mnist("full", cache_dir=args.data_dir, download=False)
    arrays = (mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test)
    expected = {a.shape: real_hash(a) for a in arrays}

    def with_check():
        datasets.load_mnist("full", cache_dir=args.data_dir, download=False)

    def without_check():
        cache._content_sha256 = lambda a: expected[a.shape]
        try:
            datasets.load_mnist("full", cache_dir=args.data_dir, download=False)
        finally:
            cache._content_sha256 = real_hash

    def read_only():
        datasets.load_idx_dir(args.data_dir)

    def hash_in_line():
        for a in arrays:
            real_hash(a)

    cases = (read_only, without_check, with_check, hash_in_line)
    times = {f.__name__: [] for f in cases}
    for _ in range(args.runs):
        for f in cases:
            start = time.perf_counter()
            f()
            times[f.__name__].append(time.perf_counter() - start)
    for name, ts in times.items():
        print(f"{name:14s} median {statistics.median(ts) * 1e3:6.1f} ms "
              f"(min {min(ts) * 1e3:.1f}, max {max(ts) * 1e3:.1f}; {len(ts)} runs)")
    path = write_result(args.out, "cache_check", {
        "data": str(args.data_dir), "runs": args.runs,
        "median_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
        "seconds": times, "machine": machine_info()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

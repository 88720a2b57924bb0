"""Peak resident memory of ``mnist-xp train`` on the full MNIST.

Runs the command in a child process with the default settings and reads the child's
peak resident set size from the operating system (``getrusage``; Linux and macOS).
For scale it also reports a child that only imports mnist_xp and loads the data.

    python benchmarks/memory.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402


def peak_rss_mb(args: list[str]) -> float:
    """Peak RSS (MiB) of one child process running ``python *args``."""
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
    # RUSAGE_CHILDREN reports the largest child so far: call this smallest run first.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the full MNIST (IDX files)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    load_only = peak_rss_mb(["-c", "import mnist_xp, sys; mnist_xp.load_mnist(data_dir=sys.argv[1])",
                             str(args.data_dir)])
    train = peak_rss_mb(["-m", "mnist_xp", "train", "--data-dir", str(args.data_dir), "--quiet",
                         "--device", "cpu"])
    print(f"import + load full MNIST: {load_only:7.1f} MiB peak RSS")
    print(f"mnist-xp train (defaults): {train:7.1f} MiB peak RSS")
    path = write_result(args.out, "memory", {"data_dir": str(args.data_dir),
                                             "load_only_mib": load_only, "train_mib": train,
                                             "machine": machine_info()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

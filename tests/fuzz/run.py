"""Run one fuzz harness under atheris (libFuzzer) for as long as asked.

Usage, from the repository root::

    PYTHONPATH=src python -m tests.fuzz.run NAME [--seconds N] [--runs N] [--corpus DIR]

NAME is a harness, ``tests/fuzz/fuzz_NAME.py`` (``idx``, ``npy``, ``model``,
``picture``, ``http``...); ``--list`` names them. The harness's generated seeds start
the corpus (in a temporary directory unless ``--corpus`` keeps it). The run stops
after ``--seconds`` (default 600) or ``--runs`` inputs, or at the first crash, and
prints how many inputs ran. A crashing input is saved as
``tests/fuzz/crashes/NAME/crash-<sha1>``; ``tests/test_fuzz.py`` replays every such
file, so a fixed crash stays a test case. Needs ``pip install 'mnist-xp[fuzz]'``.

libFuzzer ends the process from C, so no ``atexit`` handler or ``finally`` of the
fuzzing process ever runs: the run happens in a child process whose temporary files
(the corpus, the harnesses' scratch files) all go under one directory that this
process removes when the child ends, however it ends.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Instrumented for coverage: the product and the pure-Python parsers under it.
_INSTRUMENTED = ["mnist_xp", "PIL", "numpy.lib", "zipfile", "gzip", "json", "tokenize", "ast"]


def harness_names() -> list[str]:
    """The harnesses present: NAME for every tests/fuzz/fuzz_NAME.py."""
    return sorted(p.stem[len("fuzz_"):] for p in HERE.glob("fuzz_*.py"))


def load_harness(name: str):
    """The module ``fuzz_NAME``, imported as ``fuzz.fuzz_NAME`` with tests/ on sys.path
    (as tests/test_fuzz.py imports it)."""
    tests_dir = str(HERE.parent)
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    return importlib.import_module(f"fuzz.fuzz_{name}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and fuzz; returns the exit status (libFuzzer's on a crash)."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="the harness (tests/fuzz/fuzz_NAME.py)")
    parser.add_argument("--seconds", type=int, default=600, help="how long to run (600)")
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many inputs")
    parser.add_argument("--corpus", type=Path, help="keep the corpus in this directory")
    parser.add_argument("--timeout", type=int, default=20,
                        help="seconds one input may take before it counts as a hang (20)")
    parser.add_argument("--list", action="store_true", help="name the harnesses and exit")
    parser.add_argument("--in-child", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.list or not args.name:
        print("\n".join(harness_names()))
        return 0 if args.list else 2
    if args.name not in harness_names():
        parser.error(f"no harness {args.name!r}; there are: {', '.join(harness_names())}")
    try:
        import atheris
    except ImportError:
        parser.error("atheris is not installed: pip install 'mnist-xp[fuzz]'")

    if not args.in_child:
        return _run_in_child(args.name, argv)
    with atheris.instrument_imports(include=_INSTRUMENTED):
        harness = load_harness(args.name)
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix=f"fuzz_{args.name}_"))
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in harness.seeds():
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
    crashes = HERE / "crashes" / args.name
    crashes.mkdir(parents=True, exist_ok=True)

    count = [0]
    started = time.monotonic()

    def one_input(data: bytes) -> None:
        count[0] += 1
        if count[0] & (count[0] - 1) == 0 and count[0] >= 1024:  # powers of two
            print(f"fuzz {args.name}: {count[0]:,} inputs in "
                  f"{time.monotonic() - started:,.0f} s", flush=True)
        harness.one_input(data)

    libfuzzer = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}",
                 f"-runs={args.runs}", f"-timeout={args.timeout}", "-rss_limit_mb=4096",
                 f"-artifact_prefix={crashes}/", "-print_final_stats=1"]
    print(f"fuzz {args.name}: {args.seconds} s, corpus {corpus}, crashes to {crashes}/",
          flush=True)
    atheris.Setup(libfuzzer, one_input)
    atheris.Fuzz()  # exits the process: libFuzzer prints "Done N runs in S second(s)"
    return 0


def _run_in_child(name: str, argv: list[str]) -> int:
    """Fuzz in a child process with its temporary files in one directory removed after."""
    parent = Path(tempfile.mkdtemp(prefix=f"mnist_xp_fuzz_{name}_"))
    env = {**os.environ, "TMPDIR": str(parent)}  # tempfile's directory in the child
    try:
        return subprocess.call([sys.executable, str(Path(__file__).resolve()), *argv,
                                "--in-child"], env=env)
    except KeyboardInterrupt:  # the child got the Ctrl-C too and has stopped
        return 130
    finally:
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

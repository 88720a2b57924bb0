"""The fuzz harnesses of tests/fuzz/, briefly, as part of the normal suite.

For every ``tests/fuzz/fuzz_NAME.py`` (see tests/fuzz/__init__.py for the convention):
its generated seeds, every crashing input a long run saved under
``tests/fuzz/crashes/NAME/`` (each found bug stays a test case), and a short
derandomized hypothesis run of random bytes and of mutated seeds. A harness raises only
on a bug, so each of these passes when it returns. The long runs are
``python -m tests.fuzz.run NAME --seconds N`` (README, "Fuzzing").
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = Path(__file__).parent / "fuzz"
NAMES = sorted(p.stem[len("fuzz_"):] for p in FUZZ.glob("fuzz_*.py"))
CRASHES = sorted((name, p) for name in NAMES
                 for p in sorted((FUZZ / "crashes" / name).glob("*")) if p.is_file())

# Examples per harness in the hypothesis run (a harness may ask for fewer or more
# with HYPOTHESIS_EXAMPLES); the whole file takes about 12 to 15 s on two shared cores
# (measured 12.1, 12.9 and 15.1 s), as the README says.
EXAMPLES = 300


def harness(name: str):
    """The module tests/fuzz/fuzz_NAME.py (imported as the runner imports it)."""
    return importlib.import_module(f"fuzz.fuzz_{name}")


def test_the_convention_holds():
    assert {"idx", "npy", "model", "picture"} <= set(NAMES)
    for name in NAMES:
        module = harness(name)
        assert callable(module.one_input) and callable(module.seeds), name
        seeds = module.seeds()
        assert seeds and all(isinstance(s, bytes) for s in seeds), name


@pytest.mark.parametrize("name", NAMES)
def test_every_seed_passes(name):
    module = harness(name)
    for seed in module.seeds():
        module.one_input(seed)


@pytest.mark.parametrize("name, path", [pytest.param(n, p, id=f"{n}/{p.name}")
                                        for n, p in CRASHES])
def test_a_saved_crash_no_longer_crashes(name, path):
    harness(name).one_input(path.read_bytes())


def _mutate(args) -> bytes:
    """A seed with some bytes overwritten, inserted, deleted, or the tail cut off."""
    seed, edits = args
    b = bytearray(seed)
    for kind, position, chunk in edits:
        i = position % (len(b) + 1)
        if kind == 0:
            b[i:i + len(chunk)] = chunk
        elif kind == 1:
            b[i:i] = chunk
        elif kind == 2:
            del b[i:i + chunk[0]]
        else:
            del b[i:]
    return bytes(b)


def _inputs(seeds: list[bytes]):
    """Random bytes, and the seeds mutated (most inputs, as the long runs do)."""
    edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20),
                               st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)
    return st.one_of(st.binary(max_size=512),
                     st.tuples(st.sampled_from(seeds), edits).map(_mutate))


@pytest.mark.parametrize("name", NAMES)
def test_a_short_derandomized_run(name):
    module = harness(name)
    examples = getattr(module, "HYPOTHESIS_EXAMPLES", EXAMPLES)

    @settings(derandomize=True, max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(_inputs(module.seeds()))
    def run(data: bytes) -> None:
        module.one_input(data)

    run()


def test_a_long_run_leaves_no_temporary_files(tmp_path):
    """libFuzzer exits from C, skipping atexit: the runner's parent process cleans up."""
    pytest.importorskip("atheris")
    import os
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "npy", "--runs", "100",
                           "--seconds", "60"], cwd=FUZZ.parents[1], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Done 100 runs" in done.stderr
    assert not list(tmp_path.iterdir())

"""Fuzz harnesses for the readers of hostile input, kept in the repository.

Each harness is a module ``fuzz_<name>.py`` exposing

- ``one_input(data: bytes) -> None``: feeds `data` to one reader; raises only on a
  real bug (an exception other than the reader's documented error types, or a broken
  invariant such as a message that does not name the file);
- ``seeds() -> list[bytes]``: a generated seed corpus (nothing is downloaded).

``tests/test_fuzz.py`` runs every harness's seeds, every saved crash under
``tests/fuzz/crashes/<name>/`` and a short derandomized hypothesis run as part of the
normal suite; ``python -m tests.fuzz.run NAME --seconds N`` runs one under atheris
for as long as asked (see README, "Fuzzing").
"""

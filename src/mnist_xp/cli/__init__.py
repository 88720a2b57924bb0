"""The ``mnist-xp`` command: train, evaluate, predict, preprocess, serve, info.

One module per command group (``train``, ``evaluate``, ``predict`` with
``preprocess``, ``serve``, ``info``), the parser (``parser``, whose ``train`` flags
come from `mnist_xp.settings`) and what they share (``common``). The commands use only
the public API of the estimator, the backend and the other packages.

A user's mistake (bad flag, missing or corrupt file, unusable required device) ends
with one line on stderr and exit status 2, never a traceback; files are written
atomically, and only once the work that produces them has succeeded.
"""

from __future__ import annotations

import sys

from ..errors import MnistXPError
from .common import printable, say
from .evaluate import cmd_evaluate
from .info import cmd_info
from .parser import build_parser
from .predict import cmd_predict, cmd_preprocess
from .serve import cmd_serve
from .train import cmd_train
from .tune import cmd_tune

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "preprocess": cmd_preprocess, "serve": cmd_serve, "info": cmd_info,
            "tune": cmd_tune}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MnistXPError as exc:
        say(f"error: {exc}")
        return 2
    except MemoryError as exc:
        # Backstop: inputs are size-checked before allocating, but a size the user
        # asked for may still not fit; one line, not a traceback.
        if type(exc).__name__ == "OutOfMemoryError":  # CuPy's, a MemoryError subclass
            say(f"error: out of GPU memory ({printable(str(exc))}); try a smaller "
                "--batch-size, or --device cpu")
        else:
            say(f"error: out of memory ({printable(str(exc)) or 'MemoryError'}); use smaller "
                "inputs, --batch-size or --hidden")
        return 2
    except KeyboardInterrupt:
        say("interrupted; no model was saved" if args.command == "train" else "interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a traceback.
        sys.stderr.close()
        return 0

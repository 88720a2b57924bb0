"""``mnist-xp serve``: the drawing page and JSON API until Ctrl-C."""

from __future__ import annotations

import errno
import signal

from ..model_files import read_metadata
from .common import UsageError, load_model, say

__all__ = ["cmd_serve"]


def cmd_serve(args) -> int:
    """Serve the drawing page and the JSON API until Ctrl-C (exit status 130)."""
    from ..web.server import make_server

    model, backend = load_model(args)
    try:
        server = make_server(model, args.host, args.port, device=backend.device,
                             model_name=args.model.name, metadata=read_metadata(args.model))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {args.port}: address {args.host}:{args.port} is already "
                             "in use; choose another --port (0 picks a free one)") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"--port {args.port}: permission denied; use a port above "
                             "1023") from None
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"--host {args.host}: cannot listen there ({reason}); use an "
                         "address of this machine, e.g. 127.0.0.1") from None
    # Ctrl-C (and SIGTERM) ask the server to stop instead of raising KeyboardInterrupt,
    # which could land anywhere, e.g. inside the event loop's construction, and print
    # a traceback there.
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        server.shutdown()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    try:
        print(f"serving http://{shown}:{port}/ (model {args.model.name}, {backend.device}); "
              "Ctrl-C stops", flush=True)
        server.serve_forever()
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped")
    return 130 if signal.SIGINT in stopped else 0

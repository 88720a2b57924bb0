"""The `mnist-xp serve` app on a free port of 127.0.0.1, in a thread, for tests."""

from __future__ import annotations

import contextlib
import threading

from mnist_xp.model_files import default_model_path, load, read_metadata
from mnist_xp.web.server import make_server

TIMEOUT = 60  # seconds; a safety net against a hung server, never asserted on


@contextlib.contextmanager
def running_server(**kw):
    """Serve the installed model until the block ends; yields the server.

    Keywords go to `make_server` (``max_connections``, ``pictures``, ``log``).
    """
    model = load(default_model_path(), device="cpu")
    srv = make_server(model, "127.0.0.1", 0, device="cpu", model_name="default.npz",
                      metadata=read_metadata(default_model_path()), **kw)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    assert srv.wait_started(TIMEOUT)
    try:
        yield srv
    finally:
        srv.shutdown()
        thread.join(TIMEOUT)
        srv.server_close()


def dying_read(body: bytes, n_features: int):
    """A picture step that kills its process (as the kernel's OOM killer would)."""
    import os

    os._exit(3)

"""Work in a daemon thread whose result (or exception) is taken later from a future.

Daemon, not a pool: a run that fails meanwhile does not wait for the thread (a pool would, at
its shutdown). Used where Polars/DuckDB work that releases the GIL can run beside other work
(ranking's preparation during the rules, the candidates' lines during ranking)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


def in_background(fn: Callable[..., Any], *args: Any, name: str = "belegwacht-background"
                  ) -> Future[Any]:
    """``fn(*args)`` in a daemon thread called ``name``; ``result()`` returns its value or
    raises its exception."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - raised where the result is taken
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future

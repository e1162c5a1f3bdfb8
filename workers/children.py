"""Child processes that end with the process that started them (Linux).

``callscribe up`` runs the broker and the workers in sessions of their own (so a terminal's
Ctrl-C reaches ``up`` alone, which stops them in order). If ``up`` itself is killed (``kill -9``,
an OOM kill, a closed terminal), nothing would stop them: with :func:`die_with_parent` as the
``preexec_fn``, the kernel sends each one SIGTERM when ``up`` exits, however it exits, and each
drains as it does on any SIGTERM.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks for SIGTERM when the parent exits (None off Linux).

    Call it in the thread that keeps running for as long as the child should: the kernel
    signals the child when the thread that forked it exits."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return preexec

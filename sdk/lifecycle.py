"""The process around runs: runs a script leaves open are finished at exit (failed after an
uncaught exception or a non-zero ``sys.exit``, stopped after Ctrl-C, as W&B's exit hooks
do), and a forked child owns none of its parent's runs."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import traceback
import weakref
from typing import TYPE_CHECKING, Any, NoReturn

from ..store.records import RunStatus

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger("assay.sdk.run")

#: Runs started in this process and not finished.
_active_runs: weakref.WeakSet[Run] = weakref.WeakSet()
#: Set while the interpreter exits (LanceDB cannot be loaded then).
_exiting: list[bool] = []
_last_exc: list[BaseException] = []
_exit_code: list[Any] = []
_prev_hook = sys.excepthook
_real_exit = sys.exit


def _excepthook(tp: Any, val: BaseException, tb: Any) -> None:
    _last_exc.append(val)
    _prev_hook(tp, val, tb)


def _exit(code: str | int | None = None, /) -> NoReturn:
    """``sys.exit`` that notes its code, so a run left open is finished as failed when the
    script exits non-zero (``sys.exit(1)``, argparse errors, ``sys.exit("message")``), as
    W&B's exit hooks do. SystemExit raised directly is not seen."""
    _exit_code.append(code)
    _real_exit(code)


def _forget_runs_in_child() -> None:
    """After a fork the child owns none of the parent's runs: their writer threads do not
    exist here, so logging to them is refused (it was silently dropped)."""
    for r in list(_active_runs):
        r._forked = True
        r._finished = True  # log() checks one flag, as before
    _active_runs.clear()
    _exit_code.clear()
    _last_exc.clear()


def _finish_all() -> None:
    """Finish runs the script left open: failed if it died of an exception, else completed.

    Several open runs finish at once, so exit waits for the slowest (a remote run whose
    server is slow to acknowledge), not for the sum of their waits."""
    _exiting.append(True)
    runs = [r for r in _active_runs if r._pid == os.getpid()]  # never a forked parent's
    if len(runs) <= 1:
        for r in runs:
            _finish_at_exit(r)
        return
    # Plain threads: an executor refuses new work once the interpreter is shutting down.
    threads = [threading.Thread(target=_finish_at_exit, args=(r,), name=f"assay-exit-{r.id}")
               for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class StderrTail:
    """``sys.stderr`` as before, keeping the last ``keep`` characters written through Python,
    so that a script that prints its error and exits non-zero fails its run with the why
    (C-level writes to fd 2 are not seen). Everything else is the wrapped stream's."""

    def __init__(self, stream: Any, keep: int = 2000) -> None:
        self._stream, self._keep, self._tail = stream, keep, ""

    def write(self, text: str) -> int:
        if isinstance(text, str):
            self._tail = (self._tail + text)[-self._keep:]
        n = self._stream.write(text)
        return len(text) if n is None else int(n)

    def tail(self) -> str:
        return self._tail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


#: Lines of the script's stderr a run that exits non-zero keeps in its error (0: none).
STDERR_LINES = int(os.environ.get("ASSAY_STDERR_TAIL_LINES", "10"))


def stderr_tail(lines: int = STDERR_LINES) -> str:
    """The last ``lines`` lines the script wrote to stderr, progress-bar redraws (``\r``)
    reduced to their last state and secrets masked (the error is shown to every viewer)."""
    from .capture import scrub_text

    if lines <= 0 or not isinstance(sys.stderr, StderrTail):
        return ""
    shown = [ln.rsplit("\r", 1)[-1].rstrip() for ln in sys.stderr.tail().split("\n")]
    return scrub_text("\n".join([ln for ln in shown if ln.strip()][-lines:]))


def _exit_error(code: Any) -> str:
    said = stderr_tail()
    return f"the script exited with sys.exit({code!r})" + (
        f"; the end of its stderr:\n{said}" if said else "")


def _finish_at_exit(r: Run) -> None:
    try:
        code = _exit_code[-1] if _exit_code else None
        if _last_exc and isinstance(_last_exc[-1], KeyboardInterrupt):
            r.finish(RunStatus.STOPPED, "KeyboardInterrupt")
        elif code not in (None, 0) and not _last_exc:
            r.finish(RunStatus.FAILED, _exit_error(code))
        elif _last_exc:
            e = _last_exc[-1]
            r.finish(RunStatus.FAILED,
                     "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        else:
            r.finish()
    except Exception:
        log.exception("assay could not finish run %s at exit", r.id)


_installed: list[bool] = []


def install() -> None:
    """Hook the interpreter (once): exceptions and exit codes noted, runs finished at exit,
    a fork's child cut off from its parent's runs."""
    if _installed:
        return
    _installed.append(True)
    sys.excepthook = _excepthook
    sys.exit = _exit
    os.register_at_fork(after_in_child=_forget_runs_in_child)
    atexit.register(_finish_all)


def watch_stderr() -> None:
    """Keep the tail of ``sys.stderr`` (a run started: :class:`StderrTail`)."""
    if sys.stderr is not None and not isinstance(sys.stderr, StderrTail):
        sys.stderr = StderrTail(sys.stderr)  # type: ignore[assignment]

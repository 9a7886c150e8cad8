"""Standard output closed early (`signoff ... | head -1`): stop quietly, as Unix tools do."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from signoff.client.cmd import exitcodes

# What a shell reports for a command ended by SIGPIPE (128 + 13), which is how `cat` or `grep`
# end in a pipeline whose reader left; unlike 1 or 2 it cannot be read as a verdict or an error.
EXIT_BROKEN_PIPE = exitcodes.CLOSED_PIPE


def quiet_on_closed_stdout(run: Callable[[], int]) -> int:
    """Run a command that writes to standard output; its exit code, or EXIT_BROKEN_PIPE without
    a traceback when the reader has gone.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError, possibly only
    in the interpreter's final flush. Flushing here keeps it inside; then, as the Python
    documentation advises for this case, standard output is pointed at devnull so that final
    flush has nowhere left to fail.
    """
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE

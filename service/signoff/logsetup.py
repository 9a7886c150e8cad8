"""Logging for the long-running commands: one Formatter that keeps every record on its line."""

from __future__ import annotations

import logging

from signoff.safetext import escape_line

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Lines of a traceback or stack follow their record indented, so none of them, whatever an
# exception's text holds, can pass for a record of its own (records start with the time).
_CONTINUATION = "    "


class OneLineFormatter(logging.Formatter):
    """Escapes control characters in the rendered message (`\\n`, `\\u202e`, ...).

    Log calls pass outside values (token subjects, ids, Redis and URL errors) as arguments;
    escaping the rendered message here covers every call at once, including ones not yet
    written, where escaping at each call site would miss the next one.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_line(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        # Formatted here rather than from record.exc_text: another handler may have cached an
        # unescaped one there.
        blocks = []
        if record.exc_info:
            blocks.append(self.formatException(record.exc_info))
        elif record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            text += "".join(f"\n{_CONTINUATION}{escape_line(line)}" for line in block.splitlines())
        return text


def configure(level: str | int) -> None:
    """Log to stderr at `level` through OneLineFormatter (a no-op if logging is set up already)."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])

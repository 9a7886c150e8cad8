"""The exit codes of every `signoff` command, defined once.

A number means one thing per command; where two commands give one number different meanings
(3 is MASK for `check`, a timeout for `approvals watch`), both names stand here side by side so
the documentation of each command and this table cannot drift apart.
"""

from __future__ import annotations

OK = 0
# The command ran and the answer is no: DENY, a refused vote, tampering found, failing cases,
# lint findings, a bundle that does not verify, a rejected or expired approval.
REFUSED = 1
# Bad flags, bad configuration, or a run that could not be carried out at all.
USAGE = 2
MASK = 3
TIMEOUT = 3
REQUIRE_APPROVAL = 4
NOT_FOUND = 4
UNAVAILABLE = 5
UNAUTHENTICATED = 6
# 128 + SIGPIPE: a reader that closed our standard output ends us as the shell expects.
CLOSED_PIPE = 141
# 128 + SIGINT: Ctrl-C.
INTERRUPTED = 130

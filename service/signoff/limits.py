"""How much one request may ask of the service: sizes and counts every surface enforces."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# How deep objects and lists may nest in a request's JSON (a protobuf Struct over gRPC, a body
# over HTTP), counting the outermost object as 1: one bound, so a request means the same and
# is refused the same on every surface. Protobuf parsers refuse messages nested past 100
# levels, and each JSON object level costs 3 message levels (Struct, map entry, Value; a list
# costs 2). The deepest place request data comes back is a payload in ListApprovals/
# WatchApproval responses, 3 messages down: 33 object levels there (3 + 3 x 33 > 100) break
# every approver's client. 20 (at most 63 message levels) leave room for the API to nest.
MAX_STRUCT_DEPTH = 20
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def step(key: str) -> str:
    """A path step for `key` in a refusal's field name: keys are caller data, so anything but a
    plain name is quoted and the path stays one unambiguous line."""
    return f".{key}" if _PLAIN_KEY.fullmatch(key) else f"[{json.dumps(key)}]"


@dataclass(frozen=True)
class Limits:
    """Bounds on request size, so one caller cannot make a decision arbitrarily expensive."""

    max_batch_items: int = 1000
    max_id_length: int = 512
    max_roles: int = 256
    max_fields: int = 2000
    max_tags_per_field: int = 64
    max_struct_bytes: int = 256 * 1024
    # Largest request message the server reads; a larger one is refused (RESOURCE_EXHAUSTED)
    # from its length prefix, before its body is read.
    max_message_bytes: int = 1024 * 1024
    # RPCs admitted at once, running or waiting for a worker; beyond: RESOURCE_EXHAUSTED.
    # 0: no limit.
    max_concurrent_rpcs: int = 256

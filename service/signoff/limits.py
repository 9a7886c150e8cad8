"""How much one request may ask of the service: sizes and counts every surface enforces."""

from __future__ import annotations

from dataclasses import dataclass


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

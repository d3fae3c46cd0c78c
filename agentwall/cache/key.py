"""The decision-cache key.

blake2b-128 over everything a cacheable decision can depend on: the policy
hash (so a reload or promote invalidates every entry without a flush), the
caller's identity class (``Identity.claims_class``, the digest of the claims the
policy looks at; ``None`` when the call carries no identity, which is not the
same as an identity with no claims), the message's origin, kind and transport,
the method, the target, and the canonical JSON of the arguments.

The fixed fields are one canonical JSON array, which is self-delimiting, and the
arguments' canonical bytes follow it, so no two different calls share an input.
"""

from __future__ import annotations

from hashlib import blake2b

from agentwall.core.canonical import canonical_json
from agentwall.types import Call

KEY_BYTES = 16
_PERSON = b"aw-decision-v1"


def decision_key(policy_hash: str, call: Call) -> bytes:
    identity = call.identity
    head = canonical_json(
        [
            policy_hash,
            None if identity is None else identity.claims_class,
            call.origin,
            call.kind,
            call.transport,
            call.method,
            call.target,
        ]
    )
    digest = blake2b(head, digest_size=KEY_BYTES, person=_PERSON)
    digest.update(call.params_json)
    return digest.digest()

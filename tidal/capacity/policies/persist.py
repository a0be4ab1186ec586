"""A policy's state as versioned JSON (what the control plane stores per pool): typed both ways, no pickle.

The record holds the policy's name, the zones the state's tuples follow, a
schema version and the state. The version is the state type's shape (its field
names, recursively), so a state written by an older shape of the policy is
recognised without anyone remembering to bump a number; such a record is
dropped with a reason and the policy starts afresh, which every policy can
(its state is memory, not configuration).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from typing import Any, Sequence, get_type_hints

from pydantic import TypeAdapter, ValidationError

FORMAT = 1


def _shape(cls: Any) -> str:
    if not dataclasses.is_dataclass(cls):
        return getattr(cls, "__name__", repr(cls))
    hints = get_type_hints(cls)
    parts = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        inner = [a for a in getattr(hint, "__args__", ()) if dataclasses.is_dataclass(a)]
        parts.append(f.name + "".join("(" + _shape(a) + ")" for a in inner))
    return f"{cls.__name__}[{','.join(parts)}]"


def schema_version(state_type: type | None) -> str:
    """A short fingerprint of the state type's fields: it changes whenever a field is added, removed or renamed."""
    return hashlib.sha256(_shape(state_type).encode()).hexdigest()[:12] if state_type is not None else "none"


@lru_cache(maxsize=None)
def _adapter(state_type: type) -> TypeAdapter:
    return TypeAdapter(state_type)


def encode_state(policy: str, zones: Sequence[str], state: Any) -> str:
    """The JSON record of `state` (a policy's frozen dataclass, or None). Infinity is kept (json's extension)."""
    state_type = type(state) if state is not None else None
    body = None if state is None else _adapter(state_type).dump_python(state, mode="python")
    return json.dumps({"format": FORMAT, "policy": policy, "zones": list(zones),
                       "version": schema_version(state_type), "state": body}, separators=(",", ":"))


def decode_state(text: str | None, policy: str, zones: Sequence[str],
                 state_type: type | None) -> tuple[Any, str | None]:
    """(state, None) when the record is for this policy, these zones and this state shape; else (None, why) with
    a one-line reason to log (the caller starts the policy afresh). An empty record is (None, None)."""
    if not text:
        return None, None
    try:
        record = json.loads(text)
    except ValueError:
        return None, "the stored policy state is not JSON (written by an older version): starting afresh"
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None, "the stored policy state has an unknown format: starting afresh"
    if record.get("policy") != policy or list(record.get("zones") or ()) != list(zones):
        return None, (f"the stored policy state is for policy {record.get('policy')!r} over zones "
                      f"{record.get('zones')}: starting afresh")
    if record.get("version") != schema_version(state_type):
        return None, f"the stored {policy} state has another shape (version {record.get('version')}): starting afresh"
    if state_type is None:
        return None, None
    try:
        return _adapter(state_type).validate_python(record.get("state")), None
    except ValidationError as exc:
        return None, f"the stored {policy} state does not validate ({exc.errors()[0]['msg']}): starting afresh"


def load_or_initial(policy: Any, params: Any, zones: Sequence[str], text: str | None,
                    seed: int = 0) -> tuple[Any, str | None]:
    """A pool's policy state: the stored one when it decodes (see `decode_state`), else the policy's first state.
    `policy` is a `PolicyDef`; the second item is the reason a stored record was dropped (None if none was)."""
    initial = policy.initial_state(params, list(zones), seed)
    state, why = decode_state(text, policy.name, zones, type(initial) if initial is not None else None)
    return (initial if state is None else state), why

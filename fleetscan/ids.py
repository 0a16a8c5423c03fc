"""Local validation of MQTT client IDs, so an ID the API would refuse never costs a call.

A client ID is ``<GroupID>@@@<DeviceID>``, at most 64 characters. The group ID starts
``GID_`` or ``GID-`` and has 7 to 64 letters, digits, ``-`` and ``_``; the device ID
has letters, digits, ``-`` and ``_`` (``onsmqtt-api.md`` section 6). "Letters and
digits" means ASCII: anything else is what the docs call an invisible or invalid
character.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "MAX_CLIENT_ID_LENGTH",
    "NO_GROUP",
    "client_id_problem",
    "group_of",
    "instance_id_problem",
]

MAX_CLIENT_ID_LENGTH = 64
# The group of an ID without ``@@@`` (an ``invalid`` one).
NO_GROUP = "(none)"

_GROUP = re.compile(r"GID[-_][A-Za-z0-9_-]{3,60}")
_DEVICE = re.compile(r"[A-Za-z0-9_-]+")
_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def client_id_problem(client_id: str) -> str | None:
    """Why ``client_id`` cannot be a valid MQTT client ID, or None when it can."""
    if not client_id:
        return "empty client ID"
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        return f"longer than {MAX_CLIENT_ID_LENGTH} characters ({len(client_id)})"
    group, sep, device = client_id.partition("@@@")
    if not sep:
        return "no '@@@' between group ID and device ID"
    if not _GROUP.fullmatch(group):
        if not group.startswith(("GID_", "GID-")):
            return "group ID must start with 'GID_' or 'GID-'"
        if len(group) < 7:
            return "group ID shorter than 7 characters"
        return f"group ID has {_first_bad(group)}: only letters, digits, '-', '_' are allowed"
    if not device:
        return "empty device ID"
    if not _DEVICE.fullmatch(device):
        return f"device ID has {_first_bad(device)}: only letters, digits, '-', '_' are allowed"
    return None


def instance_id_problem(instance_id: str) -> str | None:
    """Why ``instance_id`` cannot be an instance ID (no formal spec: prefixes are not checked)."""
    if not _INSTANCE.fullmatch(instance_id):
        return "an instance ID has only letters, digits, '-' and '_' (e.g. mqtt-cn-...)"
    return None


def group_of(client_id: str) -> str:
    """The group of a client ID: the ``GID_...`` part before ``@@@``."""
    group, sep, _ = client_id.partition("@@@")
    return group if sep else NO_GROUP


def _first_bad(part: str) -> str:
    bad = next(c for c in part if not (c.isascii() and (c.isalnum() or c in "-_")))
    if bad.isascii():
        return repr(bad)
    # A look-alike (Cyrillic U+0435 for 'e') prints like the letter it imitates: name it.
    name = unicodedata.name(bad, "")
    return f"{bad!r} (U+{ord(bad):04X}{' ' + name if name else ''})"

"""What a test may change while the emulator runs: keys, limits, faults, rules.

Each method replaces a reference or a dict item, which is atomic under the GIL, so
a test may call them from another thread than the emulator's loop. `apply` takes
the JSON of ``POST /_emulator/config`` for an emulator in another process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from fleetscan.emulator.config import EmulatorConfig, FaultRule, Faults, KeyPair, Limits

__all__ = ["ArmedRule", "EmulatorControl", "IpBlock"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IpBlock:
    """A source IP blocked until ``until`` for going over ``limit`` calls/s of ``action``
    (an API, or `throttle.ALL_APIS`)."""

    until: float
    seconds: float
    limit: int
    action: str


class ArmedRule:
    """A `FaultRule` and how many more attempts it fails."""

    __slots__ = ("remaining", "rule")

    def __init__(self, rule: FaultRule) -> None:
        self.rule = rule
        self.remaining = rule.times


class EmulatorControl:
    """The running emulator's mutable settings."""

    __slots__ = ("_disabled", "_keys", "blocks", "faults", "limits", "rules")

    def __init__(self, config: EmulatorConfig) -> None:
        self.limits: Limits = config.limits
        self.faults: Faults = config.faults
        # Deterministic fault rules, tried in order.
        self.rules: list[ArmedRule] = [ArmedRule(r) for r in config.rules]
        # Accepted keys by access key ID.
        self._keys: dict[str, KeyPair] = {k.access_key_id: k for k in config.keys}
        # Key IDs that exist but are disabled (InvalidAccessKeyId.Inactive).
        self._disabled: set[str] = set()
        # Source IP -> its block, until it ends (on the emulator's clock).
        self.blocks: dict[str, IpBlock] = {}

    def __repr__(self) -> str:
        return f"EmulatorControl(limits={self.limits!r}, faults={self.faults!r})"

    # --- keys -----------------------------------------------------------------------

    def key(self, access_key_id: str) -> KeyPair | None:
        """The key with that ID, or None when there is none."""
        return self._keys.get(access_key_id)

    def is_disabled(self, access_key_id: str) -> bool:
        """True when the key was revoked (disabled) while running."""
        return access_key_id in self._disabled

    def add_key(self, key: KeyPair) -> None:
        """Accept ``key`` (replacing one with its ID), enabled."""
        self._keys[key.access_key_id] = key
        self._disabled.discard(key.access_key_id)

    def revoke_key(self, access_key_id: str) -> None:
        """Disable a key: it answers ``InvalidAccessKeyId.Inactive`` from now on."""
        self._disabled.add(access_key_id)

    def remove_key(self, access_key_id: str) -> None:
        """Delete a key: it answers ``InvalidAccessKeyId.NotFound`` from now on."""
        self._keys.pop(access_key_id, None)
        self._disabled.discard(access_key_id)

    # --- limits, faults, rules ------------------------------------------------------

    def set_limits(self, **changes: Any) -> Limits:
        """Change some limits; returns the new ones."""
        self.limits = dataclasses.replace(self.limits, **changes)
        return self.limits

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault rates or latencies; returns the new ones."""
        self.faults = dataclasses.replace(self.faults, **changes)
        return self.faults

    def add_rule(self, rule: FaultRule) -> None:
        """Append a deterministic fault rule."""
        self.rules = [*self.rules, ArmedRule(rule)]

    def clear_rules(self) -> None:
        """Forget every fault rule."""
        self.rules = []

    def unblock_ips(self) -> None:
        """Lift every source-IP block."""
        self.blocks = {}

    def apply(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``POST /_emulator/config`` JSON; returns the settings now in force.

        Keys: ``limits`` and ``faults`` (objects of fields to change), ``rules`` (a
        list of `FaultRule` fields, appended), ``clear_rules``, ``revoke_keys`` and
        ``remove_keys`` (lists of key IDs), ``add_keys`` (list of `KeyPair` fields),
        ``unblock_ips``. Raises ValueError (nothing applied) on an unknown key or field.
        """
        known = {
            "limits",
            "faults",
            "rules",
            "clear_rules",
            "revoke_keys",
            "remove_keys",
            "add_keys",
            "unblock_ips",
        }
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        try:
            limits = dataclasses.replace(self.limits, **changes.get("limits", {}))
            faults = dataclasses.replace(self.faults, **changes.get("faults", {}))
            rules = [FaultRule(**r) for r in changes.get("rules", [])]
            keys = [KeyPair(**k) for k in changes.get("add_keys", [])]
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
        self.limits, self.faults = limits, faults
        if changes.get("clear_rules"):
            self.clear_rules()
        for rule in rules:
            self.add_rule(rule)
        for key in keys:
            self.add_key(key)
        for key_id in changes.get("revoke_keys", []):
            self.revoke_key(key_id)
        for key_id in changes.get("remove_keys", []):
            self.remove_key(key_id)
        if changes.get("unblock_ips"):
            self.unblock_ips()
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """The limits, faults and rules in force, as JSON-ready data (no secrets)."""
        return {
            "limits": dataclasses.asdict(self.limits),
            "faults": dataclasses.asdict(self.faults),
            "rules": [{**dataclasses.asdict(a.rule), "remaining": a.remaining} for a in self.rules],
            "keys": sorted(self._keys),
            "revoked_keys": sorted(self._disabled),
        }

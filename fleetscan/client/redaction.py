"""Cutting secrets out of text the server sent back.

An error answer may quote the request (Alibaba's SignatureDoesNotMatch gives the V1
string to sign, which holds the STS token; some proxies echo the URL), so every
message taken from an answer goes through a redactor first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

from fleetscan.signing import percent_encode

__all__ = ["REDACTED", "REDACT_WINDOW", "redactor"]

# What stands in an error message for a secret or token the server quoted back.
REDACTED: Final = "<redacted>"
# How much of an unreadable body is searched for secrets before a snippet is shown.
REDACT_WINDOW: Final = 16 * 1024


def redactor(secrets: Sequence[str | None]) -> Callable[[str], str]:
    """Replaces each secret, as is or percent-encoded once or twice, in any case."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            once = percent_encode(secret)
            forms.update((secret, once, percent_encode(once)))
    if not forms:
        return lambda text: text
    # Longest first, so a form is never half-replaced by a shorter one inside it.
    pattern = re.compile(
        "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)), re.IGNORECASE
    )
    return lambda text: pattern.sub(REDACTED, text)

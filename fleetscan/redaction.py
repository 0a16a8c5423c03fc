"""Cutting secrets out of text a server sent back, before anyone sees it.

An error answer may quote the request (Alibaba's SignatureDoesNotMatch gives the V1
string to sign, which holds the STS token; some proxies echo the URL or the body), so
every message taken from an answer goes through a `redactor` of the secrets that
request carried. Shared by the API client and the STS client.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from fleetscan.signing import percent_encode

__all__ = ["REDACTED", "redactor"]

# What stands in an error message for a secret or token the server quoted back.
REDACTED: Final = "<redacted>"


def redactor(secrets: Iterable[str | None]) -> Callable[[str], str]:
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

"""How a scan ended: one enum, one order of precedence.

When more than one thing happened (a SIGINT, then an account-wide error from a call
that was still on the wire), the outcome is the first that applies of:

1. ``OUTPUT_ERROR``: the records could not be written (a closed pipe, a full disk).
   Nothing more can be recorded, whatever else happened, and a ``--resume`` needs
   the destination fixed first.
2. ``ABORTED``: an account-wide API error (credentials, permission, instance, a
   blocked IP), or a service that gave no answer for the outage timeout. A
   ``--resume`` cannot get past it until the account (or the service) is fixed.
3. ``INPUT_ERROR``: a malformed input line ended the reading. The input must be fixed
   before a ``--resume`` can read past it; again more than an interruption asks.
4. ``INTERRUPTED``: a stop from outside (a signal, a library caller leaving early).
   A plain ``--resume`` finishes the scan.
5. ``COMPLETED_WITH_ERRORS``, then ``COMPLETED``.

The summary, the library's result and the exit code all take the outcome from here.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Outcome", "outcome_of"]


class Outcome(StrEnum):
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed with errors"
    INTERRUPTED = "interrupted"
    INPUT_ERROR = "input error"
    ABORTED = "aborted"
    OUTPUT_ERROR = "output error"


def outcome_of(
    *,
    aborted: bool,
    input_error: bool,
    interrupted: bool,
    errors: int,
    output_error: bool = False,
) -> Outcome:
    """The outcome, in the one order of precedence (see the module docstring)."""
    if output_error:
        return Outcome.OUTPUT_ERROR
    if aborted:
        return Outcome.ABORTED
    if input_error:
        return Outcome.INPUT_ERROR
    if interrupted:
        return Outcome.INTERRUPTED
    return Outcome.COMPLETED_WITH_ERRORS if errors else Outcome.COMPLETED

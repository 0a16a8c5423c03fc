"""Admission: which read IDs a scan asks about, counted as they are read.

Each unique ID once (the first time it is read, or never when ``--resume`` found a
final record for it); an ID that fails local validation is never sent. With a shard
(``--shard K/N``), an ID another shard owns is skipped first, before dedup and
validation: the seen-set holds this shard's IDs only, and an invalid ID gets its
``invalid`` record from one shard, not from all of them. The same code
counts for ``fleetscan estimate``, so the forecast and the scan agree on the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fleetscan.dedup import SeenSet
from fleetscan.ids import client_id_problem
from fleetscan.summary import ScanCounters

__all__ = ["Admission", "tally"]


class Admission:
    """Decides, and counts in ``counters``, what becomes of each read client ID.

    ``on_invalid(client_id, problem)`` is told of each unique ID that fails validation.
    """

    __slots__ = ("_on_invalid", "_owns", "counters", "seen")

    def __init__(
        self,
        counters: ScanCounters,
        *,
        seen: SeenSet | None = None,
        on_invalid: Callable[[str, str], None] | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.counters = counters
        # The shard's test (`fleetscan.shard.Shard.owns`); None: every ID is ours.
        self._owns = owns
        self.seen = seen if seen is not None else SeenSet()
        self._on_invalid = on_invalid

    def admit(self, client_id: str) -> bool:
        """True when ``client_id`` is to be asked about; False for a duplicate, or an
        ID already done, or an invalid one (handed to ``on_invalid``), or another
        shard's."""
        counters = self.counters
        counters.read += 1
        if self._owns is not None and not self._owns(client_id):
            counters.other_shards += 1
            return False
        if not self.seen.add(client_id):
            counters.duplicates += 1
            return False
        counters.unique += 1
        problem = client_id_problem(client_id)
        if problem is None:
            return True
        counters.invalid += 1
        if self._on_invalid is not None:
            self._on_invalid(client_id, problem)
        return False


def tally(
    client_ids: Iterable[str],
    *,
    seen: SeenSet | None = None,
    owns: Callable[[str], bool] | None = None,
) -> ScanCounters:
    """What a scan of ``client_ids`` would read, skip and ask (nothing is sent).

    ``counters.unique - counters.invalid`` IDs would be asked about.
    """
    counters = ScanCounters()
    admit = Admission(counters, seen=seen, owns=owns).admit
    for client_id in client_ids:
        admit(client_id)
    return counters

"""The public names are pinned: adding or removing one is a deliberate change."""

from __future__ import annotations

import fleetscan


def test_all_is_sorted_and_complete() -> None:
    assert fleetscan.__all__ == sorted(fleetscan.__all__)
    for name in fleetscan.__all__:
        assert hasattr(fleetscan, name), name


def test_exported_members() -> None:
    public = {n for n in dir(fleetscan) if not n.startswith("_")} | {"__version__"}
    # Submodules are attributes of a package once imported; they are not API names.
    modules = {n for n in public if type(getattr(fleetscan, n)).__name__ == "module"}
    assert set(fleetscan.__all__) == public - modules

"""Holder of the current reference snapshot, swapped whole on reload."""

from __future__ import annotations

from pathlib import Path

from gateway.reference.loader import ReferenceDataError, load_reference
from gateway.reference.snapshot import ReferenceData

__all__ = ["ReferenceStore"]


class ReferenceStore:
    """Readers take `current` once per decision and keep that snapshot for the whole decision;
    a reload replaces the reference in a single assignment, so nobody sees half-new data.
    """

    def __init__(self, *, initial: ReferenceData) -> None:
        """initial: the snapshot served until the first successful reload."""
        self._current = initial

    @classmethod
    def load(cls, root: Path) -> ReferenceStore:
        """Start from the data below `root`; raises ReferenceDataError when it is bad."""
        return cls(initial=load_reference(root))

    @property
    def current(self) -> ReferenceData:
        return self._current

    def reload(self, root: Path) -> tuple[bool, str]:
        """Load `root` again. On success swap and return (True, summary); on any defect keep the
        old snapshot and return (False, every problem found).
        """
        try:
            fresh = load_reference(root)
        except ReferenceDataError as exc:
            return False, f"kept {self._current.summary()}; reload failed:\n{exc}"
        unchanged = fresh.digest == self._current.digest
        self._current = fresh
        return True, ("unchanged: " if unchanged else "reloaded: ") + fresh.summary()

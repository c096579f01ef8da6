"""Adapter names are unique on the worker, atomically: a load or unload claims its name first.

A claim is taken under one lock, after checking that no other instance answers to the name (its
served names, its spec's adapters and those loaded at run time, as the in-memory registry copy
says) and that no load or unload of the name is in flight. It is held while the engine is asked
and the record written, then released; so two loads of one name into two instances never both
succeed. Nothing slow runs under the lock: the check reads memory only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from berth.worker.errors import InstanceConflict
from berth.worker.loras._names import served_model_names
from berth.worker.store import InstanceRecord

#: The worker's records, read from memory (``Registry.all``).
Records = Callable[[], Iterable[InstanceRecord]]

class NameClaims:
    """Adapter names being loaded or unloaded right now, each with the instance it is for."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._claims: dict[str, str] = {}

    def take(self, name: str, instance_id: str, records: Records | None = None) -> None:
        """Claim ``name`` for ``instance_id``; :class:`InstanceConflict` when it is in flight or
        another live instance (of ``records()``, when given) answers to it."""
        with self._guard:
            if name in self._claims:
                raise InstanceConflict(f"name: adapter {name!r} is being loaded or unloaded on instance "
                                       f"{self._claims[name]!r} right now; retry when that is done")
            other = _answering(records(), name, instance_id) if records is not None else None
            if other is not None:
                raise InstanceConflict(f"name: instance {other!r} already answers to {name!r}; pick another adapter name")
            self._claims[name] = instance_id

    def try_take(self, name: str, instance_id: str) -> bool:
        """Claim ``name`` unless a load or unload of it is in flight (no other check): the keeper's way."""
        with self._guard:
            if name in self._claims:
                return False
            self._claims[name] = instance_id
            return True

    def release(self, name: str) -> None:
        with self._guard:
            self._claims.pop(name, None)

    @contextmanager
    def held(self, name: str, instance_id: str, records: Records | None = None) -> Iterator[None]:
        self.take(name, instance_id, records)
        try:
            yield
        finally:
            self.release(name)

    def __len__(self) -> int:
        with self._guard:
            return len(self._claims)


def _answering(records: Iterable[InstanceRecord], name: str, instance_id: str) -> str | None:
    for record in records:
        if record.id != instance_id and not record.state.terminal and name in served_model_names(record):
            return record.id
    return None

"""What the fake server records about each request it receives."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass


class Headers(Mapping[str, str]):
    """Request headers as received: lookups ignore case, repeated headers are joined by ", "."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            if (seen := self._items.get(name.lower())) is not None:
                name, value = seen[0], f"{seen[1]}, {value}"
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self)!r})"


@dataclass(frozen=True)
class TokenRequestRecord:
    """A request to the token path, recorded before it was answered.

    ``form`` is the parsed body (empty when it is not a valid form); ``received_at`` is the
    server's ``clock()`` when the request arrived.
    """

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    form: dict[str, list[str]]
    received_at: float


@dataclass(frozen=True)
class ApiRequestRecord:
    """A request to the protected API, the status it was answered with and the token it bore."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    status: int
    token: str | None
    received_at: float

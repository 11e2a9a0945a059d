"""Named presets: one list of frozen config objects per kind, looked up by name.

Every kind of preset (architecture sizes, recipes, demo and study budgets) is a `Presets` of
frozen dataclasses that carry their own `name`, written out whole in one place, the way openpi's
`_CONFIGS` list is. A lookup of an unknown name fails with the nearest known one:

    RECIPES["kl"]  ->  ValueError: recipe 'kl': unknown; did you mean 'ki'? (known: naive, ..., ki)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Presets(Generic[T]):
    """An ordered, read-only list of named presets of one `kind` ("recipe", "size", ...)."""

    def __init__(self, kind: str, presets: Iterable[T]) -> None:
        self.kind = kind
        self._by_name: dict[str, T] = {}
        for preset in presets:
            if preset.name in self._by_name:
                raise ValueError(f"{kind} presets: the name {preset.name!r} is used twice")
            self._by_name[preset.name] = preset

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def get(self, name: str, field: str | None = None) -> T:
        """The preset `name`; an unknown name raises ValueError, prefixed by `field` ("RunConfig.size")."""
        if name not in self._by_name:
            message = unknown_name(self.kind, name, self.names())
            raise ValueError(f"{field}: {message}" if field else message)
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[T]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __repr__(self) -> str:
        return f"Presets({self.kind!r}, {list(self._by_name)})"


def unknown_name(kind: str, name: object, known: Iterable[str]) -> str:
    """The error message for an unknown name: the nearest known one (difflib) and all of them."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{kind} {name!r}: unknown; {hint}(known: {', '.join(known)})"


def check_positive(preset: object, except_fields: Iterable[str] = ()) -> None:
    """Every int / float field of the dataclass `preset` must be > 0; the error names the field."""
    for f in dataclasses.fields(preset):
        value = getattr(preset, f.name)
        if f.type in ("int", "float") and f.name not in except_fields and not value > 0:
            raise ValueError(f"{type(preset).__name__}.{f.name}: expected > 0, got {value}")

"""One registry helper for every plugin kind: methods, datasets, generators, networks, chains, adapters.

A :class:`Registry` maps an id to an explicit import target (``"package.module:attribute"``) or to an
object, imports a target only when :meth:`Registry.load` asks for it (Brain-Score's lazy registries), and
answers an unknown id with an error that lists the valid ones. Packages outside brainbench add entries
through an entry-point group (``[project.entry-points."brainbench.methods"]`` in their ``pyproject.toml``);
only the names an installed distribution declares are read, nothing is found by scanning text.

>>> colours = Registry("colour", {"red": "builtins:str"})
>>> colours.list()
['red']
>>> colours.load("red") is str
True
>>> colours.load("blue")
Traceback (most recent call last):
...
brainbench.errors.ConfigError: unknown colour 'blue'; available: red
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from brainbench.errors import ConfigError

T = TypeVar("T")


def import_target(target: str) -> object:
    """The attribute named by ``"package.module:attribute"`` (or ``"package.module.attribute"``)."""
    module_name, sep, attribute = target.partition(":")
    if not sep:
        module_name, _, attribute = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} (for {target!r}): {error}") from error
    obj: object = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as error:
            raise ConfigError(f"{module_name!r} has no {attribute!r} (for {target!r})") from error
    return obj


class Registry(Mapping[str, str | T], Generic[T]):
    """Ids of one plugin kind, each bound to an import target string or to the object itself.

    Args:
        kind: what the ids name, for messages (``"method"``, ``"dataset"``, ...).
        entries: id -> ``"module:attribute"`` (imported on :meth:`load`) or the object.
        entry_point_group: an entry-point group read on first use (e.g. ``"brainbench.methods"``); its
            entries join the registry unless they reuse a built-in id (refused with an error on load).
    """

    def __init__(
        self, kind: str, entries: Mapping[str, str | T] | None = None, entry_point_group: str | None = None
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, str | T] = dict(entries or {})
        self._built_in = frozenset(self._entries)
        self._plugins_read = entry_point_group is None

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        for entry in entry_points(group=str(self.entry_point_group)):
            if entry.name in self._entries:
                raise ConfigError(
                    f"the installed package {entry.dist.name if entry.dist else '?'} registers {self.kind} "
                    f"{entry.name!r}, which brainbench already has; rename it in its entry points"
                )
            self._entries[entry.name] = entry.value

    def register(self, name: str, target: str | T) -> None:
        """Adds ``name``; a registered name is refused (ids are stable: leaderboard rows keep them)."""
        self._read_plugins()
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = target

    def is_built_in(self, name: str) -> bool:
        """Whether ``name`` was given when the registry was made (not by a plug-in or :meth:`register`)."""
        return name in self._built_in

    def list(self) -> list[str]:
        """The registered ids, sorted."""
        self._read_plugins()
        return sorted(self._entries)

    def check(self, name: str) -> str:
        """Returns ``name`` if registered; otherwise raises :class:`ConfigError` listing the valid ids."""
        self._read_plugins()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.list())}")
        return name

    def load(self, name: str) -> T:
        """The object registered as ``name``, importing its module on first use."""
        entry = self._entries[self.check(name)]
        if isinstance(entry, str):
            entry = import_target(entry)  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def __getitem__(self, name: str) -> str | T:
        return self._entries[self.check(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._read_plugins()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._read_plugins()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"

"""An application service's registration file, and the namespace rules it implies.

The file is the contract an operator signs with a bridge: which users, aliases
and rooms it is interested in (regexes), which of those it owns exclusively,
and the two tokens (the bridge's to call Roost, Roost's to call the bridge).
Loading is strict, like the rest of the configuration: a registration whose
regex does not compile or whose tokens are missing stops Roost at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml


class RegistrationError(Exception):
    """A registration file Roost cannot use; the message names the file and key."""


@dataclass(frozen=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool


@dataclass(frozen=True)
class AppService:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str  # the bridge bot's own user id
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    rate_limited: bool = True
    receive_ephemeral: bool = False
    protocols: tuple[str, ...] = field(default_factory=tuple)

    def owns_user(self, user_id: str) -> bool:
        """The sender, or a user in its users namespace: those it may act as."""
        return user_id == self.sender or _matches(self.users, user_id)

    def interested_in_user(self, user_id: str) -> bool:
        return self.owns_user(user_id)

    def interested_in_alias(self, alias: str) -> bool:
        return _matches(self.aliases, alias)

    def interested_in_room(self, room_id: str) -> bool:
        return _matches(self.rooms, room_id)

    def exclusive_user(self, user_id: str) -> bool:
        return _matches(self.users, user_id, exclusive_only=True)

    def exclusive_alias(self, alias: str) -> bool:
        return _matches(self.aliases, alias, exclusive_only=True)


def _matches(spaces: Sequence[Namespace], value: str, exclusive_only: bool = False) -> bool:
    return any(ns.regex.fullmatch(value) for ns in spaces if ns.exclusive or not exclusive_only)


def _namespaces(path: str, raw: Any, kind: str) -> tuple[Namespace, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RegistrationError(f"{path}: namespaces.{kind} must be a list")
    found = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("regex"), str):
            raise RegistrationError(f"{path}: namespaces.{kind}[{i}] needs a regex")
        exclusive = entry.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise RegistrationError(f"{path}: namespaces.{kind}[{i}].exclusive must be a boolean")
        try:
            found.append(Namespace(re.compile(entry["regex"]), exclusive))
        except re.error as e:
            raise RegistrationError(f"{path}: namespaces.{kind}[{i}].regex: {e}") from None
    return tuple(found)


def parse_registration(path: str, raw: Any, server_name: str) -> AppService:
    if not isinstance(raw, dict):
        raise RegistrationError(f"{path}: not a mapping")
    for key in ("id", "as_token", "hs_token", "sender_localpart"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise RegistrationError(f"{path}: {key} must be a non-empty string")
    url = raw.get("url")
    if url is not None and not isinstance(url, str):
        raise RegistrationError(f"{path}: url must be a string or null")
    namespaces = raw.get("namespaces") or {}
    if not isinstance(namespaces, dict):
        raise RegistrationError(f"{path}: namespaces must be a mapping")
    ephemeral = raw.get("receive_ephemeral", raw.get("de.sorunome.msc2409.push_ephemeral", False))
    protocols = raw.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise RegistrationError(f"{path}: protocols must be a list of strings")
    return AppService(
        id=raw["id"], url=url.rstrip("/") if url else None, as_token=raw["as_token"],
        hs_token=raw["hs_token"], sender=f"@{raw['sender_localpart']}:{server_name}",
        users=_namespaces(path, namespaces.get("users"), "users"),
        aliases=_namespaces(path, namespaces.get("aliases"), "aliases"),
        rooms=_namespaces(path, namespaces.get("rooms"), "rooms"),
        rate_limited=bool(raw.get("rate_limited", True)),
        receive_ephemeral=bool(ephemeral), protocols=tuple(protocols))


def load_registrations(paths: Iterable[str], server_name: str) -> list[AppService]:
    """Every registration file; ids and as_tokens must be unique across them."""
    services = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise RegistrationError(f"{path}: {e}") from None
        services.append(parse_registration(path, raw, server_name))
    for attr in ("id", "as_token"):
        values = [getattr(s, attr) for s in services]
        if len(values) != len(set(values)):
            raise RegistrationError(f"two application services share an {attr}")
    return services

"""`roost user ...` and `roost room ...`: the admin API's everyday operations at a shell.

They run against the configured database with no server and no token, through
the same objects the admin API uses (AdminUsers, AdminRooms), so a change made
here is made exactly as the API would make it. With a server running on the
same database, prefer the API (a running server keeps some state in memory,
such as the live sessions a deactivation ends); docs/admin.md says so.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the wiring (every package) is imported only when a command runs
    from roost.homeserver.wiring import Homeserver

Action = Callable[["Homeserver", argparse.Namespace], Awaitable[int]]


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _user_id(hs: Homeserver, name: str) -> str:
    return name if name.startswith("@") else f"@{name}:{hs.config.server_name}"


async def user_list(hs: Homeserver, args: argparse.Namespace) -> int:
    from roost.storage.admin_queries import UserFilter

    assert hs.admin is not None
    rows, total = await hs.admin.users.queries.list_users(
        UserFilter(name=args.name, deactivated=args.deactivated), "name", False, 0, args.limit)
    for row in rows:
        flags = [f for f, on in (("admin", row.is_admin), ("deactivated", row.deactivated)) if on]
        print(row.user_id + (f"  ({', '.join(flags)})" if flags else ""))
    print(f"{len(rows)} of {total} users")
    return 0


async def user_show(hs: Homeserver, args: argparse.Namespace) -> int:
    assert hs.admin is not None
    _print(await hs.admin.users.user_json(_user_id(hs, args.user)))
    return 0


async def user_deactivate(hs: Homeserver, args: argparse.Namespace) -> int:
    assert hs.admin is not None
    user_id = _user_id(hs, args.user)
    await hs.admin.users.user_json(user_id)  # 404 first for a user who does not exist
    await hs.admin.users.deactivate(user_id)
    print(f"deactivated {user_id}")
    return 0


async def user_set_admin(hs: Homeserver, args: argparse.Namespace) -> int:
    assert hs.admin is not None
    user_id = _user_id(hs, args.user)
    await hs.admin.users.user_json(user_id)
    await hs.admin.users.queries.set_admin(user_id, args.admin == "true")
    print(f"{user_id} is {'now' if args.admin == 'true' else 'no longer'} an admin")
    return 0


async def user_reset_password(hs: Homeserver, args: argparse.Namespace) -> int:
    assert hs.admin is not None
    user_id = _user_id(hs, args.user)
    await hs.admin.users.user_json(user_id)
    password = args.password or getpass.getpass("New password: ")
    await hs.accounts.set_password(user_id, password)
    await hs.admin.users.logout_all(user_id)
    print(f"password of {user_id} changed; its devices are logged out")
    return 0


async def room_list(hs: Homeserver, args: argparse.Namespace) -> int:
    assert hs.admin is not None
    rooms, total = await hs.admin.rooms.queries.list_rooms(
        args.search, "joined_members", True, 0, args.limit)
    for room in rooms:
        label = room["name"] or room["canonical_alias"] or ""
        print(f"{room['room_id']}  {room['joined_members']} members  {label}".rstrip())
    print(f"{len(rooms)} of {total} rooms")
    return 0


async def room_show(hs: Homeserver, args: argparse.Namespace) -> int:
    assert hs.admin is not None
    summary = await hs.admin.rooms.queries.room(args.room)
    if summary is None:
        sys.stderr.write(f"roost: no room {args.room}\n")
        return 1
    _print({k: v for k, v in summary.items() if v is not None})
    return 0


async def room_shutdown(hs: Homeserver, args: argparse.Namespace) -> int:
    from roost.admin.rooms import Shutdown, ShutdownRequest

    assert hs.admin is not None
    if await hs.admin.rooms.queries.room(args.room) is None:
        sys.stderr.write(f"roost: no room {args.room}\n")
        return 1
    new_user = _user_id(hs, args.new_room_user) if args.new_room_user else None
    request = ShutdownRequest(new_user, args.room_name, args.message, args.block, args.purge)
    shutdown = Shutdown("cli", args.room)
    await hs.admin.rooms.shut_down(shutdown, request, new_user or "roost command")
    _print(shutdown.to_json())
    return 0 if shutdown.status == "complete" else 1


def add_commands(sub: Any, run: Callable[[argparse.Namespace, Action], int]) -> None:
    """Add `user` and `room` to the `roost` parser; `run` builds the homeserver around one."""

    def command(parent: Any, name: str, action: Action, help_text: str) -> Any:
        parser = parent.add_parser(name, help=help_text)
        parser.add_argument("-c", "--config", default="homeserver.yaml")
        parser.set_defaults(fn=lambda args: run(args, action))
        return parser

    users = sub.add_parser("user", help="list and manage users").add_subparsers(
        dest="action", required=True)
    listed = command(users, "list", user_list, "list users")
    listed.add_argument("--name", help="only ids or display names containing this")
    listed.add_argument("--deactivated", action="store_true", help="include deactivated users")
    listed.add_argument("--limit", type=int, default=100)
    command(users, "show", user_show, "show a user").add_argument("user")
    command(users, "deactivate", user_deactivate, "deactivate a user").add_argument("user")
    admin = command(users, "set-admin", user_set_admin, "grant or revoke admin rights")
    admin.add_argument("user")
    admin.add_argument("admin", choices=["true", "false"])
    reset = command(users, "reset-password", user_reset_password,
                    "set a new password and log the user's devices out")
    reset.add_argument("user")
    reset.add_argument("--password")

    rooms = sub.add_parser("room", help="list and manage rooms").add_subparsers(
        dest="action", required=True)
    room_listed = command(rooms, "list", room_list, "list rooms, biggest first")
    room_listed.add_argument("--search", help="only rooms whose name, alias or id contain this")
    room_listed.add_argument("--limit", type=int, default=100)
    command(rooms, "show", room_show, "show a room").add_argument("room")
    shut = command(rooms, "shutdown", room_shutdown,
                   "make every local member leave, drop its aliases, optionally block it")
    shut.add_argument("room")
    shut.add_argument("--block", action="store_true", help="forbid joining it again")
    shut.add_argument("--purge", action="store_true",
                      help="also delete the room and its history from the database")
    shut.add_argument("--new-room-user", help="move the members to a new room made by this user")
    shut.add_argument("--room-name", default="Content Violation Notification")
    shut.add_argument("--message", default="This room was shut down by the server's admins.")

"""`rtsp-viewer users add|list|passwd|grant|revoke|remove` and `createsuperuser` (the
seed's word for `users add --role admin`): the users of app/accounts/, managed on the
server's machine, in the database DATABASE_URL names (so the first admin can be made
before anyone can sign in). A password is read from the terminal (asked twice), or one
line from stdin when stdin is not a terminal. Each change writes an audit line
(`cli:<login>`) on stderr. Exit status: 0 done, 1 refused (no such user, exists, last
admin), 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

import trio

from ..accounts import Change, InvalidUser, LastAdmin, Role, UserExists, Users, role_of, stream_ids, user_name
from ..accounts.passwords import Passwords, WeakPassword, check_strength
from ..db import StorageError, open_database
from ..logs import audit, configure
from ..settings import load_or_exit
from ..store import now_iso

ACTIONS = ("add", "list", "passwd", "grant", "revoke", "remove")


class Refused(Exception):
    """The command cannot be done; str() is the line to print."""


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    manage = commands.add_parser("users", help="add | list | passwd | grant | revoke | remove the users (DATABASE_URL)")
    manage.add_argument("action", choices=ACTIONS)
    manage.add_argument("name", nargs="?", help="the user")
    manage.add_argument("streams_arg", nargs="?", metavar="IDS", help="grant, revoke: stream ids, 1,2,3")
    manage.add_argument("--role", choices=[str(r) for r in Role], help="add: admin or viewer")
    manage.add_argument("--streams", default="", help="add: the streams a viewer watches: 1,2,3 or all")
    superuser = commands.add_parser("createsuperuser", help="add an admin (users add NAME --role admin)")
    superuser.add_argument("name", nargs="?", help="the admin's name (asked when not given, on a terminal)")


def run(args: argparse.Namespace) -> int:
    """Run a `users` or `createsuperuser` command; its exit status."""
    settings = load_or_exit(os.environ)
    configure("INFO", settings.log_format)
    if args.command == "createsuperuser":
        args.action, args.role, args.streams, args.streams_arg = "add", "admin", "", None
        if args.name is None and sys.stdin.isatty():
            args.name = input("Username: ")
    try:
        return trio.run(_run, args, settings.database_url, Passwords(settings.password_hash))
    except (Refused, LastAdmin, InvalidUser, WeakPassword) as error:
        print(f"rtsp-viewer users: {error}", file=sys.stderr)
        return 2 if isinstance(error, InvalidUser | WeakPassword) or "usage" in str(error) else 1
    except StorageError as error:
        print(f"rtsp-viewer users: storage unavailable: {error}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, url: str, passwords: Passwords) -> int:
    db = open_database(url)
    await db.open()
    try:
        return await _act(Users(db), passwords, args)
    finally:
        await db.close()


async def _act(users: Users, passwords: Passwords, args: argparse.Namespace) -> int:
    if args.action == "list":
        for user in await users.all():
            streams = "all" if user.streams is None else ",".join(map(str, sorted(user.streams))) or "-"
            print(f"{user.name}\t{user.role}\t{streams}")
        return 0
    if args.name is None:
        raise Refused(f"usage: rtsp-viewer users {args.action} NAME")
    name, stamp = user_name(args.name), now_iso()
    if args.action == "add":
        if args.role is None:
            raise Refused("usage: rtsp-viewer users add NAME --role admin|viewer [--streams 1,2|all]")
        role = role_of(args.role)
        granted = None if role is Role.ADMIN else stream_ids(args.streams or "")
        try:
            await users.add(name, role, granted, await passwords.hash(_password()), stamp)
        except UserExists as exists:
            raise Refused(str(exists)) from None
        return _done("user.create", name, f"added {role} {name}", ["role", "streams"])
    if args.action == "remove":
        if not await users.remove(name, keep_an_admin=False):
            raise Refused(f"no user {name}")
        if not await users.any():
            print("rtsp-viewer users: no user is left: without API_TOKEN the server is open to anyone who reaches it",
                  file=sys.stderr)
        return _done("user.delete", name, f"removed {name}")
    if args.action == "passwd":
        change = Change(password_hash=await passwords.hash(_password()))
    elif args.streams_arg is None:
        raise Refused(f"usage: rtsp-viewer users {args.action} NAME 1,2,3")
    else:
        ids = stream_ids(args.streams_arg) or frozenset()
        change = Change(grant=ids) if args.action == "grant" else Change(revoke=ids)
    if await users.change(name, change, stamp) is None:
        raise Refused(f"no user {name}")
    action = {"passwd": "user.password", "grant": "user.grant", "revoke": "user.revoke"}[args.action]
    return _done(action, name, f"{args.action}: {name}", ["password" if args.action == "passwd" else "streams"])


def _done(action: str, name: str, line: str, fields: list[str] | None = None) -> int:
    audit(action, name, actor=f"cli:{_login()}", client=None, fields=fields)
    print(line)
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _password() -> str:
    """The new password: asked twice on a terminal, else the first line of stdin."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise Refused("the passwords differ")
    check_strength(password)
    return password

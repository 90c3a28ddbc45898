"""The `roost` command: run, generate-config, register-user, registration-token, migrate,
and the admin operations `user` and `room` (cli_admin.py)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from roost.homeserver.config import ConfigError, RoostConfig, load_config


def _load(path: str, worker: str | None = None, tool: bool = True) -> RoostConfig:
    """The configuration as this command runs it: as instance `worker` for `run`, as a
    tool beside the instances for the other commands."""
    try:
        config = load_config(path)
        return config.for_tool() if tool else config.for_worker(worker)
    except ConfigError as e:
        sys.stderr.write(f"roost: configuration error: {e}\n")
        raise SystemExit(1) from None


def cmd_run(args: argparse.Namespace) -> int:
    from roost.homeserver import nvx
    from roost.homeserver.memory import (
        skip_http2,
        trim_periodically,
        tune_allocator,
        tune_collector_after_start,
    )

    tune_allocator()  # before the reactor or the database pool starts a thread
    skip_http2()  # before the server's modules import twisted.web
    nvx.install()  # before the WebSocket code imports autobahn
    from roost.http.reactor import install

    install()  # epoll without a legacy log context per socket read (roost/http/reactor.py)
    from twisted.internet import reactor

    from roost.homeserver.logsetup import setup_logging
    from roost.homeserver.service import RoostService

    config = _load(args.config, args.worker, tool=False)
    setup_logging(config.logging, config.path)
    service = RoostService(config, reactor)
    failed: list[Any] = []
    tune_collector_after_start(service.started)
    trim_periodically(service.started, reactor)
    service.started.addErrback(failed.append)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    if failed:
        sys.stderr.write(f"roost: failed to start: {failed[0].getErrorMessage()}\n")
        return 1
    return 0


def cmd_generate_config(args: argparse.Namespace) -> int:
    from roost.homeserver.config_template import render_config
    from roost.keys.local import load_or_create_signing_key

    if os.path.exists(args.output) and not args.force:
        sys.stderr.write(f"roost: {args.output} exists; pass --force to overwrite\n")
        return 1
    tls_cert = tls_key = None
    if args.tls:
        from roost.homeserver.tlsgen import write_self_signed

        config_dir = os.path.dirname(os.path.abspath(args.output))
        tls_cert, tls_key = write_self_signed(config_dir, args.data_dir, args.server_name)
    text = render_config(
        args.server_name,
        data_dir=args.data_dir,
        client_port=args.port,
        registration_enabled=args.enable_registration,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    with open(args.output, "w") as f:
        f.write(text)
    config = load_config(args.output)
    load_or_create_signing_key(config.signing_key_file)
    print(f"wrote {args.output} and the signing key {config.signing_key_file}")
    return 0


def _run_async(fn: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run `fn(reactor)` to completion on a reactor and return its exit status."""
    from twisted.internet import defer, task

    result: list[int] = []

    async def main(reactor: Any) -> None:
        result.append(await fn(reactor))

    try:
        task.react(lambda r: defer.ensureDeferred(main(r)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return result[0] if result else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args.config)

    async def run(reactor: Any) -> int:
        from roost.homeserver.wiring import open_database

        db, embedded = await open_database(config, reactor)
        db.close()
        if embedded is not None:
            embedded.cleanup()
        print("database schema is up to date")
        return 0

    return _run_async(run)


def cmd_register_user(args: argparse.Namespace) -> int:
    config = _load(args.config)
    password = args.password or getpass.getpass("Password: ")

    async def run(reactor: Any) -> int:
        from roost.homeserver.service import stop_homeserver
        from roost.homeserver.wiring import build_homeserver

        hs = await build_homeserver(config, reactor)
        if hs.replication is None:  # beside one process that caches sessions
            from roost.homeserver.session_wiring import command_beside_one_process

            command_beside_one_process(hs.db, reactor)
        try:
            user_id = await hs.register_user(args.user, password, admin=args.admin)
        except Exception as e:  # a clear line, not a traceback, for a taken name
            sys.stderr.write(f"roost: could not register {args.user}: {e}\n")
            return 1
        finally:
            await stop_homeserver(hs)
        print(f"registered {user_id}{' (admin)' if args.admin else ''}")
        return 0

    return _run_async(run)


def cmd_registration_token(args: argparse.Namespace) -> int:
    """Make a registration token (for `registration.require_token`) and print it."""
    from roost.storage.registration_tokens import (
        MAX_TOKEN_LENGTH,
        RegistrationTokenStore,
        TokenExistsError,
        valid_token_text,
    )

    config = _load(args.config)
    if args.token is not None and not valid_token_text(args.token):
        sys.stderr.write(f"roost: a token is 1 to {MAX_TOKEN_LENGTH} of A-Z a-z 0-9 . _ ~ -\n")
        return 1
    for name in ("uses", "expires_in_days"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            sys.stderr.write(f"roost: --{name.replace('_', '-')} must be positive\n")
            return 1

    async def run(reactor: Any) -> int:
        from roost.homeserver.wiring import open_database

        db, embedded = await open_database(config, reactor)
        now_ms = int(reactor.seconds() * 1000)
        expiry = None if args.expires_in_days is None else now_ms + args.expires_in_days * 86_400_000
        try:
            made = await RegistrationTokenStore(db).create(args.token, args.uses, expiry, now_ms)
        except TokenExistsError:
            sys.stderr.write(f"roost: the token {args.token} exists already\n")
            return 1
        finally:
            db.close()
            if embedded is not None:
                embedded.cleanup()
        print(made.token)
        return 0

    return _run_async(run)


def _with_homeserver(args: argparse.Namespace, action: Any) -> int:
    """Build the homeserver on the configured database, run one admin action, stop it."""
    config = _load(args.config)

    async def run(reactor: Any) -> int:
        from roost.homeserver.service import stop_homeserver
        from roost.homeserver.wiring import build_homeserver
        from roost.http.errors import MatrixError

        hs = await build_homeserver(config, reactor)
        if hs.replication is None:  # beside one process that caches sessions
            from roost.homeserver.session_wiring import command_beside_one_process

            command_beside_one_process(hs.db, reactor)
        try:
            return int(await action(hs, args))
        except MatrixError as e:
            sys.stderr.write(f"roost: {e.to_json().get('error', e)}\n")
            return 1
        finally:
            await stop_homeserver(hs)

    return _run_async(run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roost", description="A Matrix homeserver.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the homeserver")
    run.add_argument("-c", "--config", default="homeserver.yaml")
    run.add_argument("--worker", metavar="NAME",
                     help="run as this instance of the configuration's workers.instances")
    run.set_defaults(fn=cmd_run)

    gen = sub.add_parser("generate-config", help="write a configuration and a signing key")
    gen.add_argument("--server-name", required=True)
    gen.add_argument("-o", "--output", default="homeserver.yaml")
    gen.add_argument("--data-dir", default="./data")
    gen.add_argument("--port", type=int, default=8008)
    gen.add_argument("--enable-registration", action="store_true")
    gen.add_argument("--tls", action="store_true", help="make a self-signed certificate for federation")
    gen.add_argument("--force", action="store_true")
    gen.set_defaults(fn=cmd_generate_config)

    reg = sub.add_parser("register-user", help="create a user")
    reg.add_argument("-c", "--config", default="homeserver.yaml")
    reg.add_argument("--user", required=True, help="localpart or full user id")
    reg.add_argument("--password")
    reg.add_argument("--admin", action="store_true")
    reg.set_defaults(fn=cmd_register_user)

    tok = sub.add_parser("registration-token", help="make a registration token and print it")
    tok.add_argument("-c", "--config", default="homeserver.yaml")
    tok.add_argument("--token", help="the token's text (default: 16 random characters)")
    tok.add_argument("--uses", type=int, help="how many accounts it may create (default: any)")
    tok.add_argument("--expires-in-days", type=int, help="valid for this many days (default: ever)")
    tok.set_defaults(fn=cmd_registration_token)

    mig = sub.add_parser("migrate", help="apply database migrations and exit")
    mig.add_argument("-c", "--config", default="homeserver.yaml")
    mig.set_defaults(fn=cmd_migrate)

    from roost.homeserver.cli_admin import add_commands

    add_commands(sub, _with_homeserver)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.fn(args))


if __name__ == "__main__":
    main()

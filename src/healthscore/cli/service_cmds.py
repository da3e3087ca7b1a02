"""Service commands: ``serve``, ``token create/list/revoke``, ``auth user add/list/remove``,
``ingest rejects/pending``.

Place in the flow: ``cli/``, over :mod:`healthscore.service` (``run``, ``Settings``) and
:mod:`healthscore.service.local`, which sends a command to the running server when one
owns the store and otherwise writes the store itself; tables come from
:mod:`healthscore.views.terminal`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from healthscore.cli.common import (
    FORMAT,
    DbOpt,
    ModelOpt,
    OutOpt,
    TableFormat,
    own_signals,
    through_server,
    write_output,
)
from healthscore.service import local
from healthscore.views import terminal


@own_signals  # Uvicorn's graceful shutdown, which then ends the process by the signal
def serve_command(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (1-65535)")] = 8000,
    db: DbOpt = None,
    model: ModelOpt = None,
    admin_user: Annotated[
        str | None,
        typer.Option(
            help="before serving, make (or reset) this dashboard admin with a new random "
            "password, printed once"
        ),
    ] = None,
    idle_builds: Annotated[
        bool,
        typer.Option(
            help="while idle, build the plans of larger micro-batches (seconds of CPU "
            "each; off, a large batch builds its plan when it comes)"
        ),
    ] = True,
) -> None:
    """Run the live service (API, dashboard, rescorer) until Ctrl-C. While it runs it owns
    a DuckDB store: other commands go through it or say so."""
    from healthscore.service import Settings, run

    settings = Settings(
        db=db, model=str(model) if model else None, host=host, port=port, idle_builds=idle_builds
    )
    start = local.prepare_serving(db, admin_user, host, port, settings)
    run(settings, on_ready=lambda: announce(settings.base_url, start))


serve_command.through_server = True  # it checks the store itself


def _say(text: str) -> None:
    """One line as it is: paths, URLs, tokens and passwords are never wrapped (a copy
    must work) nor read as markup."""
    terminal.stdout.print(text, markup=False, highlight=False, soft_wrap=True)


def announce(url: str, start: local.Serving) -> None:
    """Where the service is, and the admin's one-time password."""
    _say(f"serving {start.store} at {url}  (Ctrl-C to stop)")
    _say(f"  dashboard: {url}/login    API docs: {url}/docs")
    if start.password:
        _say(
            f"  log in as {start.username} with password {start.password}  "
            "(shown once; `healthscore auth user add` sets another)"
        )


# --- tokens ------------------------------------------------------------------------------


@through_server
def token_create_command(
    name: Annotated[str, typer.Option("--name", help="who or what uses it, e.g. 'CRM sync'")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="read, ingest, ingest:<table>,<table>, segment or admin (repeatable)",
        ),
    ],
    expires: Annotated[
        str | None,
        typer.Option(help="30d, 12mo, or a date (UTC) [default: never]"),
    ] = None,
    db: DbOpt = None,
) -> None:
    """Make an API token; it is printed once (the store keeps only its hash)."""
    made = local.create_token(db, name, scope, expires)
    _say(made["token"])
    terminal.say(
        terminal.stderr,
        f"token {made['token_id']} ({' '.join(made['scopes'])}) for {made['name']}"
        + (f", expires {made['expires_at']}" if made.get("expires_at") else "")
        + ": shown once, store it now",
    )


@through_server
def token_list_command(db: DbOpt = None) -> None:
    """API tokens (never their secrets), revoked ones included."""
    terminal.render_tokens(terminal.stdout, local.list_tokens(db))


@through_server
def token_revoke_command(
    token_id: Annotated[str, typer.Argument(help="the token's id (see token list)")],
    db: DbOpt = None,
) -> None:
    """Revoke a token: it is refused from now on."""
    token = local.revoke_token(db, token_id)
    _say(f"token {token['token_id']} ({token['name']}) revoked")


# --- dashboard users -------------------------------------------------------------------------


@through_server
def user_add_command(
    username: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="viewer, member or admin")] = "member",
    csm: Annotated[
        str | None, typer.Option(help="the CSM name this login is in the data ('my accounts')")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
    db: DbOpt = None,
) -> None:
    """Add a dashboard login (or set a new password and role); the password is asked
    for, never taken on the command line."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    user = local.add_user(db, username, password, role, csm)
    _say(f"user {user['username']} ({user['role']}) saved")


@through_server
def user_list_command(db: DbOpt = None) -> None:
    """Dashboard logins and their roles."""
    terminal.render_users(terminal.stdout, local.list_users(db))


@through_server
def user_remove_command(
    username: Annotated[str, typer.Argument(help="login name")],
    db: DbOpt = None,
) -> None:
    """Remove a dashboard login."""
    local.remove_user(db, username)
    _say(f"user {username} removed")


# --- parked ingestion -------------------------------------------------------------------------

LimitOpt = Annotated[int, typer.Option(min=1, help="at most this many messages")]
OffsetOpt = Annotated[int, typer.Option(min=0, help="skip this many (the newest) first")]


class _Listing(dict):
    def to_dict(self) -> dict:
        return dict(self)


def _parked(kind: str, limit: int, offset: int, format: TableFormat, out, db) -> None:
    listing = _Listing(local.list_parked(db, kind, limit=limit, offset=offset))
    write_output(format, out, listing, render=lambda c: terminal.render_parked(c, kind, listing))


@through_server
def ingest_rejects_command(
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    format: Annotated[TableFormat, FORMAT] = TableFormat.table,
    out_file: OutOpt = None,
    db: DbOpt = None,
) -> None:
    """Segment messages refused (not used), newest first, with the reason; a message
    sent again once fixed, with the same messageId, leaves this list."""
    _parked("rejects", limit, offset, format, out_file, db)


@through_server
def ingest_pending_command(
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    format: Annotated[TableFormat, FORMAT] = TableFormat.table,
    out_file: OutOpt = None,
    db: DbOpt = None,
) -> None:
    """Segment messages waiting for a `group` call to link their user to an account,
    newest first; they are written when it arrives."""
    _parked("pending", limit, offset, format, out_file, db)


def serve_demo(directory: Path) -> None:
    """Serve the demo in ``directory`` with a fresh random password for its admin
    (``healthscore demo --serve``, ``make serve``)."""
    from healthscore.service import Settings, run

    db = str(directory / "healthscore.duckdb")
    settings = Settings(db=db, model=str(directory / "healthscore.yaml"))
    start = local.prepare_serving(db, "admin", settings=settings)
    run(settings, on_ready=lambda: announce(settings.base_url, start))

"""CSM flag commands: ``flag add``, ``flag resolve`` and ``flag list``.

Place in the flow: ``cli/``, over :mod:`healthscore.api` (list_flags) and
:mod:`healthscore.service.local` (add and resolve: through the running server while one
owns the store, else :mod:`healthscore.api` directly); the list is drawn by
:mod:`healthscore.views.terminal`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from healthscore import api
from healthscore.cli.common import DbOpt, through_server
from healthscore.service import local
from healthscore.views import terminal

AtOpt = Annotated[str | None, typer.Option("--at", help="when (UTC) [default: now]")]


@through_server
def add_command(
    account: Annotated[str, typer.Argument(help="account id")],
    kind: Annotated[str, typer.Argument(help="e.g. champion_left, budget_freeze, new_champion")],
    note: Annotated[str | None, typer.Option(help="what happened")] = None,
    author: Annotated[str | None, typer.Option(help="who raised it")] = None,
    at: AtOpt = None,
    db: DbOpt = None,
) -> None:
    """Raise a flag on an account (active until resolved; usable as has_flag('kind'))."""
    when = api.parse_as_of(at, "at") if at else None
    row = local.add_flag(db, account, kind, note=note, author=author, at=when)
    terminal.say(
        terminal.stdout,
        f"flag {row['flag_id']}: {row['kind']} on {account} from {row['ts']:%Y-%m-%d %H:%M}",
    )


@through_server
def resolve_command(
    flag_id: Annotated[str, typer.Argument(help="the flag's id (see flag list)")],
    at: AtOpt = None,
    db: DbOpt = None,
) -> None:
    """Resolve a flag: it no longer counts from then on (history before is kept)."""
    when = api.parse_as_of(at, "at") if at else None
    row = local.resolve_flag(db, flag_id, at=when)
    terminal.say(terminal.stdout, f"flag {flag_id} resolved on {row['resolved_at']:%Y-%m-%d %H:%M}")


def list_command(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    all_: Annotated[bool, typer.Option("--all", help="include resolved flags")] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="flags active at this date/time (UTC) [default: now: a flag raised today "
            "shows here, and scores count it from tomorrow's default as-of]",
        ),
    ] = None,
    db: DbOpt = None,
) -> None:
    """Flags active at a date (default now), newest first; --all for every flag."""
    when = api.parse_as_of(as_of) if as_of else None
    store = api.connect(db, create=False, read_only=True)
    rows = api.list_flags(store, account_id=account, as_of=when, include_resolved=all_)
    terminal.render_flags(terminal.stdout, rows)

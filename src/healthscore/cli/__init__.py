"""The `healthscore` command: one Typer command per capability, thin over the API.

Place in the flow: the top, over :mod:`healthscore.api` (which does the work),
:mod:`healthscore.service` (the live service, and what goes through it while it owns
the store), :mod:`healthscore.views` (which draws it) and :mod:`healthscore.errors`; nothing else
of the package is imported here (an import-linter contract checks it). Each command
parses its options, calls one API function and prints the result through the views.
Commands live in one module per group (``project``, ``scores``, ``outcomes``,
``model_files``, ``csm_flags``, ``service_cmds``) and are registered here, each with the one error
boundary :class:`~healthscore.cli.common.Command`: ``Error: ...`` and exit code 1 for
our errors, never a traceback; usage errors exit 2.

A run builds only the command it names (:func:`main`): Typer turns every registered
command's signature into options when the app starts, and importing and converting the
whole tree cost a short command such as a repeat ``healthscore score`` more than its own
parsing. ``--help``, a group's help and a name that is no command see every command by
name and help only (:func:`build` with ``listing``): a group's help lists its commands'
names and first lines, never their options, and converting the 30 signatures was a fifth
of ``healthscore --help``. ``app``, the groups and ``COMMANDS`` are the whole tree, built
on first use.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

import typer

#: group (its path of names) -> its help; () is the app itself
GROUPS: dict[tuple[str, ...], str] = {
    (): "Explainable customer health scores: load data, score accounts, see why.",
    ("model",): "Work with model files.",
    ("flag",): "CSM flags: qualitative signals on accounts.",
    ("token",): "API tokens for the live service.",
    ("auth",): "Who may use the live service.",
    ("auth", "user"): "Dashboard logins.",
    ("ingest",): "What the live service parked: Segment messages refused or waiting.",
}
#: group -> command name -> its function, as ``module.function`` of ``healthscore.cli``
#: (a module is imported only when one of its commands is built)
TREE: dict[tuple[str, ...], dict[str, str]] = {
    (): {
        "init": "project.init_command",
        "load": "project.load_command",
        "validate": "project.validate_command",
        "score": "scores.score_command",
        "history": "scores.history_command",
        "trends": "scores.trends_command",
        "backtest": "outcomes.backtest_command",
        "calibrate": "outcomes.calibrate_command",
        "explain": "scores.explain_command",
        "compare": "scores.compare_command",
        "demo": "project.demo_command",
        "report": "scores.report_command",
        "serve": "service_cmds.serve_command",
    },
    ("model",): {
        "schema": "model_files.schema_command",
        "suggest": "model_files.suggest_command",
        "fit-percentiles": "model_files.fit_percentiles_command",
        "fit-probability": "model_files.fit_probability_command",
    },
    ("flag",): {
        "add": "csm_flags.add_command",
        "resolve": "csm_flags.resolve_command",
        "list": "csm_flags.list_command",
    },
    ("token",): {
        "create": "service_cmds.token_create_command",
        "list": "service_cmds.token_list_command",
        "revoke": "service_cmds.token_revoke_command",
    },
    ("auth", "user"): {
        "add": "service_cmds.user_add_command",
        "list": "service_cmds.user_list_command",
        "remove": "service_cmds.user_remove_command",
    },
    ("ingest",): {
        "rejects": "service_cmds.ingest_rejects_command",
        "pending": "service_cmds.ingest_pending_command",
    },
}


def _function(where: str) -> Any:
    module, name = where.rsplit(".", 1)
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _first_paragraph(function: Any) -> str:
    """A command's line in its group's listing: the first paragraph of its docstring on
    one line (Rich's help keeps a docstring's line breaks, which read as broken
    sentences in a list)."""
    import inspect

    return " ".join(inspect.cleandoc(function.__doc__ or "").split("\n\n")[0].split())


def _listed(function: Any) -> Any:
    """A stand-in for the command ``function`` in a listing: its help, no options."""

    def listed() -> None:
        raise AssertionError("a listing runs no command")  # pragma: no cover

    listed.__doc__ = function.__doc__
    return listed


def build(
    only: tuple[str, ...] | None = None, *, listing: bool = False
) -> dict[tuple[str, ...], typer.Typer]:
    """The app and its groups, by path; with ``only`` (a command's path, e.g.
    ``("model", "schema")``) only that command is registered (the groups all are, so
    the app stays a group of commands). With ``listing`` every command is registered
    by its name and help alone, without its options: enough for the help of the app or
    a group and for a name that is no command, which run no command."""
    from healthscore.cli.common import Command

    groups: dict[tuple[str, ...], typer.Typer] = {}
    for path, text in GROUPS.items():
        if not path:
            groups[path] = typer.Typer(
                help=text,
                no_args_is_help=True,
                add_completion=False,
                pretty_exceptions_enable=False,
            )
        else:
            groups[path] = typer.Typer(help=text, no_args_is_help=True)
            groups[path[:-1]].add_typer(groups[path], name=path[-1])
    for path, commands in TREE.items():
        for name, where in commands.items():
            if only is None or only == (*path, name):
                function = _function(where)
                groups[path].command(name, cls=Command, short_help=_first_paragraph(function))(
                    _listed(function) if listing else function
                )
    return groups


def command_path(args: list[str]) -> tuple[str, ...] | None:
    """The path of the command the arguments ``args`` run (``("flag", "add")``), or None
    when they name none (``--help``, a group alone, a name that is no command)."""
    path: tuple[str, ...] = ()
    for arg in args:
        if (*path, arg) in GROUPS:
            path = (*path, arg)
        elif arg in TREE.get(path, {}):
            return (*path, arg)
        else:
            return None
    return None


# the whole tree, for tests and documentation: built on first use
_GROUP_NAMES = {
    "app": (),
    "model_app": ("model",),
    "flag_app": ("flag",),
    "token_app": ("token",),
    "auth_app": ("auth",),
    "user_app": ("auth", "user"),
    "ingest_app": ("ingest",),
}


def __getattr__(name: str) -> Any:
    if name not in (*_GROUP_NAMES, "COMMANDS"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    groups = build()
    for attr, path in _GROUP_NAMES.items():
        globals()[attr] = groups[path]
    globals()["COMMANDS"] = {
        groups[path]: {name: _function(where) for name, where in commands.items()}
        for path, commands in TREE.items()
    }
    return globals()[name]


def main() -> None:
    args = sys.argv[1:]
    path = command_path(args)
    # A command's start imports its libraries: tens of thousands of objects, nearly all
    # kept until the exit. Python's collector looks at the newest objects every 700
    # allocations and at all of them again every 10 and 100 of those looks: a repeat
    # `score` made 140 collections (75 ms of its 1.5 CPU seconds at load 15). Every
    # 10,000: 9 collections, 35 ms; a few thousand more objects wait to be
    # collected at a time.
    gc.set_threshold(10_000, 10, 10)
    try:
        # no command named: a help or a usage error, unless ``--`` ends the options before one
        build(path, listing=path is None and "--" not in args)[()]()
    finally:
        _spare_last_collections()


def _spare_last_collections() -> None:
    """Leave the objects of a finished command out of the interpreter's collections at
    exit (:func:`gc.freeze`), when no store connection is open.

    Before it frees them, the exiting interpreter collects once more every object the
    command made (Typer, pydantic, pyarrow, numpy and DuckDB's modules: tens of
    thousands), for memory the process hands back anyway. A store connection caught in
    a reference cycle is closed by that collection (DuckDB then writes its last changes
    into the file): while one is open, the exit is left as it is."""
    from healthscore import api

    if not api.open_connections():
        gc.freeze()


if __name__ == "__main__":
    main()

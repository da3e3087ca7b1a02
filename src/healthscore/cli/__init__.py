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
"""

from __future__ import annotations

import typer

from healthscore.cli import csm_flags, model_files, outcomes, project, scores, service_cmds
from healthscore.cli.common import Command

app = typer.Typer(
    help="Explainable customer health scores: load data, score accounts, see why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Work with model files.", no_args_is_help=True)
app.add_typer(model_app, name="model")
flag_app = typer.Typer(help="CSM flags: qualitative signals on accounts.", no_args_is_help=True)
app.add_typer(flag_app, name="flag")
token_app = typer.Typer(help="API tokens for the live service.", no_args_is_help=True)
app.add_typer(token_app, name="token")
auth_app = typer.Typer(help="Who may use the live service.", no_args_is_help=True)
app.add_typer(auth_app, name="auth")
user_app = typer.Typer(help="Dashboard logins.", no_args_is_help=True)
auth_app.add_typer(user_app, name="user")
ingest_app = typer.Typer(
    help="What the live service parked: Segment messages refused or waiting.",
    no_args_is_help=True,
)
app.add_typer(ingest_app, name="ingest")

COMMANDS = {
    app: {
        "init": project.init_command,
        "load": project.load_command,
        "validate": project.validate_command,
        "score": scores.score_command,
        "history": scores.history_command,
        "trends": scores.trends_command,
        "backtest": outcomes.backtest_command,
        "calibrate": outcomes.calibrate_command,
        "explain": scores.explain_command,
        "compare": scores.compare_command,
        "demo": project.demo_command,
        "report": scores.report_command,
        "serve": service_cmds.serve_command,
    },
    model_app: {
        "schema": model_files.schema_command,
        "suggest": model_files.suggest_command,
        "fit-percentiles": model_files.fit_percentiles_command,
        "fit-probability": model_files.fit_probability_command,
    },
    flag_app: {
        "add": csm_flags.add_command,
        "resolve": csm_flags.resolve_command,
        "list": csm_flags.list_command,
    },
    token_app: {
        "create": service_cmds.token_create_command,
        "list": service_cmds.token_list_command,
        "revoke": service_cmds.token_revoke_command,
    },
    user_app: {
        "add": service_cmds.user_add_command,
        "list": service_cmds.user_list_command,
        "remove": service_cmds.user_remove_command,
    },
    ingest_app: {
        "rejects": service_cmds.ingest_rejects_command,
        "pending": service_cmds.ingest_pending_command,
    },
}
for group, commands in COMMANDS.items():
    for name, callback in commands.items():
        group.command(name, cls=Command)(callback)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""What every command shares: options, output formats, the error boundary, output files.

Place in the flow: the bottom of ``cli/``, above :mod:`healthscore.api` and
:mod:`healthscore.views`. Shared options (``--db``, ``--model``, ``--as-of``,
``--scorecard``, ``--out``) are defined once here, with one ``Format`` enum per family
of outputs. :class:`Command` is the one error boundary: a library error prints
``Error: ...`` and exits 1 (no traceback), arguments that do not go together and
malformed durations are usage errors (exit 2), and the backticked parameter names of
library messages (`` `train_until` ``) are translated into the running command's flags
(``--train-until``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from healthscore import api
from healthscore.errors import DurationError, HealthscoreError, StoreInUseError
from healthscore.service import local
from healthscore.views import export, terminal

# --- shared options ------------------------------------------------------------------------

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="store URL or DuckDB file [env HEALTHSCORE_DB; default healthscore.duckdb]"
    ),
]
ModelOpt = Annotated[
    Path | None, typer.Option("--model", "-m", help="model file [default: ./healthscore.yaml]")
]
#: the one default as-of of every command: the start of the current UTC day, so commands
#: agree with each other and with stored history (data dated today counts from tomorrow)
AS_OF_DEFAULT = "[default: today 00:00 UTC; data dated before it counts]"
AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help=f"score as of this date or ISO timestamp (UTC) {AS_OF_DEFAULT}"),
]
ScorecardOpt = Annotated[
    str | None,
    typer.Option("--scorecard", "-s", help="which scorecard of the model [default: health]"),
]


#: the options naming a file a command writes: checked before any work (:class:`Command`)
WRITTEN = {"--out", "--rejects", "--predictions"}


def file_to_write(value: str) -> Path:
    """An option naming a file to write: a name ending in a folder separator (``out/``)
    means a folder, which Path would silently turn into a file of that name."""
    if os.path.basename(value) in ("", ".", ".."):  # Path("out/.").name is "out"
        raise typer.BadParameter(f"{value!r} names a folder; give the file's name in it")
    return Path(value)


OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="write the output to this file [default: stdout]", parser=file_to_write
    ),
]
RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="CSV: write text cells as they are; by default a cell starting with = + - @ "
        "tab or CR gets a leading ' so a spreadsheet shows it instead of running it",
    ),
]


class TableFormat(StrEnum):
    """A result printed as tables, or as one JSON object."""

    table = "table"
    json = "json"


class TextFormat(StrEnum):
    """One account's explanation as text, or as one JSON object."""

    text = "text"
    json = "json"


class RowsFormat(StrEnum):
    """One row per account: a table, a JSON list, or CSV."""

    table = "table"
    json = "json"
    csv = "csv"


class ScoreFormat(StrEnum):
    """Scores: a table, a JSON list of nested objects, CSV, or Parquet (needs --out)."""

    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


# one option object, typed per command by its enum: Typer lists the choices in --help
# and rejects any other value as a usage error (exit 2) naming it
FORMAT = typer.Option("--format", "-f", help="output format")


# --- the error boundary --------------------------------------------------------------------

# library parameter -> flag, where the flag is not the parameter's own name
ALIASES = {
    "constants": "--set",
    "dates": "--from/--to/--every",
    "end": "--to",
    "mapping": "--map",
    "out": "--out",
    "reps": "--bootstrap",
    "report": "--out",
    "start": "--from",
    "trend": "--class",
    "bands": "--band",
}
_BACKTICKED = re.compile(r"`([a-z_][a-z0-9_]*)`")


def flag_names(command: TyperCommand) -> dict[str, str]:
    """Parameter name -> how the user writes it in this command (``--train-until``)."""
    names = {}
    for p in command.params:
        long = [o for o in p.opts if o.startswith("--")]
        names[p.name] = long[0] if long else (p.opts[0] if p.opts else p.name).upper()
    return names


def translate(message: str, command: TyperCommand | None) -> str:
    """Backticked library parameter names in ``message`` as this command's flags; other
    backticked text (`` `probability:` ``, `` `healthscore init` ``) stays as it is."""
    names = {**ALIASES, **(flag_names(command) if command is not None else {})}
    return _BACKTICKED.sub(lambda m: names.get(m.group(1), m.group(0)), message)


class Command(TyperCommand):
    """A command whose library errors are reported, never raised: the one boundary."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `--help` reads option help as Rich markup, where `[default: health]` is a tag
        # and vanished: the defaults and `[env HEALTHSCORE_DB ...]` written in it showed
        for p in self.params:
            if getattr(p, "help", None):
                p.help = p.help.replace("[", "\\[")

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            try:
                with _stopped_by_sigterm(self.callback):
                    self._check_store_free(ctx)
                    self._check_out_files(ctx)
                    result = super().invoke(ctx)
                    sys.stdout.flush()  # a full disk under a redirected stdout shows here
                    return result
            except Exception as e:
                # DuckDB turns a Ctrl-C (or SIGTERM) under a query into its own error
                # (`Query interrupted`), and the layers above may wrap that in theirs
                stop = api.interruption(e)
                if stop is None:
                    raise
                raise stop from None
        except (api.ArgumentError, DurationError) as e:  # the options are wrong: usage
            raise typer.BadParameter(translate(str(e), self), ctx=ctx) from None
        except StoreInUseError as e:  # held by another process: the server, when it is
            terminal.error(translate(str(local.explain_in_use(e, _spelled(ctx))), self))
            raise typer.Exit(1) from None
        except HealthscoreError as e:
            terminal.error(translate(str(e), self))
            raise typer.Exit(1) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Interrupted)
            signum = getattr(e, "signum", signal.SIGINT)
            terminal.error(
                f"interrupted ({signal.Signals(signum).name}): stopped, work in progress cancelled"
            )
            raise typer.Exit(128 + signum) from None
        except OSError as e:
            # a disk error no layer below named (the library names the files it writes)
            error = api.disk_error(e)
            if error is None:
                raise
            terminal.error(translate(str(error), self))
            raise typer.Exit(1) from None

    def _check_store_free(self, ctx: typer.Context) -> None:
        """A command on a store a running server owns fails before any work, naming the
        server, unless it goes through the server (:func:`through_server`)."""
        if "db" in ctx.params and not getattr(self.callback, "through_server", False):
            local.check_free(ctx.params["db"], _spelled(ctx))

    def _check_out_files(self, ctx: typer.Context) -> None:
        """A file to write fails before any work when it cannot be written or would
        replace what the command works from: its folder does not exist, it is a folder,
        or it is the store, the model file, a file the command reads or a file another
        of its options writes."""
        written = [p for p in self.params if WRITTEN & set(p.opts) and ctx.params.get(p.name)]
        if not written:
            return
        names = flag_names(self)
        kept = _files_read(self, ctx, names)
        for p in written:
            value = ctx.params[p.name]
            flag = names[p.name]
            real = Path(os.path.realpath(value))  # a link is written through (files.py)
            if real.is_dir():
                raise HealthscoreError(f"{flag} {value} is a folder; give the file's name in it")
            if not real.parent.is_dir():
                folder = real.parent if value.is_symlink() else value.parent
                raise HealthscoreError(f"{flag} {value}: the folder {folder} does not exist")
            if real.exists() and not real.is_file():
                continue  # a device or a pipe (/dev/null, a terminal): written in place
            for path, what in kept:
                if _same_file(real, path) and not (
                    what == MODEL_READ and getattr(self.callback, "edits_model", False)
                ):
                    raise HealthscoreError(f"{flag} {value} is {what}; write to another file")
            kept.append((real, f"the file {flag} writes"))


MODEL_READ = "the model file this command reads (--model)"


def _files_read(command: TyperCommand, ctx: typer.Context, names: dict[str, str]) -> list:
    """(path, what it is) of every file ``command`` works from: the store (and its
    write-ahead log), the model file and the files its other options name."""
    kept: list[tuple[Path, str]] = []
    if "db" in ctx.params:
        store = api.store_file(ctx.params["db"])
        if store is not None:
            what = "the store this command uses (--db)"
            kept += [(store, what), (store.with_name(store.name + ".wal"), what)]
    if "model" in ctx.params:
        model = api.model_path(ctx.params["model"])
        if model is not None:
            kept.append((model, MODEL_READ))
    for p in command.params:
        if WRITTEN & set(p.opts) or p.name in ("db", "model"):
            continue
        value = ctx.params.get(p.name)
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, Path):
                kept.append((v, f"the file it reads ({names[p.name]})"))
    return kept


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links, other spellings, hard links)."""
    if Path(os.path.realpath(a)) == Path(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is not there (yet)
        return False


def edits_model(command: Callable) -> Callable:
    """Mark a command that rewrites the model file it reads (by default in place): its
    ``--out`` may name that file."""
    command.edits_model = True
    return command


@contextmanager
def _stopped_by_sigterm(command: Callable) -> Iterator[None]:
    """SIGTERM stops the command as Ctrl-C does (:func:`healthscore.api.interruptible`):
    its work is rolled back and it says so, instead of the process ending silently with
    a DuckDB store's write-ahead log left behind. Not for a command whose server has its
    own shutdown (:func:`own_signals`)."""
    if getattr(command, "own_signals", False):
        yield
        return
    with api.interruptible():
        yield


def own_signals(command: Callable) -> Callable:
    """Mark a command that handles Ctrl-C and SIGTERM itself (a server's shutdown)."""
    command.own_signals = True
    return command


def _spelled(ctx: typer.Context) -> str:
    """How the user called the running command: ``healthscore flag add``."""
    names, c = [], ctx
    while c.parent is not None:
        names.append(c.info_name)
        c = c.parent
    return " ".join(["healthscore", *reversed(names)])


def through_server(command: Callable) -> Callable:
    """Mark a command that sends its work to the running server when one owns the store
    (through :mod:`healthscore.service.local`) instead of failing."""
    command.through_server = True
    return command


def reject_options(ctx: typer.Context, names: list[str], why: str) -> None:
    """A usage error naming the options among ``names`` given on the command line:
    a command never silently ignores a flag that does not apply."""
    flags = flag_names(ctx.command)
    given = [flags[n] for n in names if _source(ctx, n) == "COMMANDLINE"]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise typer.BadParameter(f"{', '.join(given)} {verb} not apply {why}")


def _source(ctx: typer.Context, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else None


# --- output --------------------------------------------------------------------------------


def write_output(
    fmt: str,
    out: Path | None,
    result: Any,
    *,
    render: Callable[[Any], None],
    rows: Any = None,
    raw: bool = False,
) -> None:
    """``result`` in format ``fmt`` to ``out`` (default stdout): ``json`` is
    ``result.to_dict()``, ``csv``/``parquet`` the Arrow table ``rows`` (one row per
    account; CSV text cells neutralized for spreadsheets unless ``raw``), anything else
    what ``render(console)`` prints. A file is replaced only once it is complete."""
    if fmt == "json":
        export.write_text(export.json_text(result.to_dict()), out)
    elif fmt in ("csv", "parquet"):
        export.write_rows(rows, fmt, out, raw=raw)
    else:
        with terminal.console_to(out) as console:
            render(console)


def model_file(model: Path | None) -> Path:
    """The model file a command writes into: ``--model`` or ./healthscore.yaml."""
    path = api.model_path(model)
    if path is None:
        raise typer.BadParameter("no model file: pass --model or run `healthscore init`")
    return path


def command_name() -> str:
    """How the user can call this program again: plain `healthscore` when it is on PATH."""
    exe = Path(sys.argv[0])
    if exe.name != "healthscore":
        return "healthscore"
    found = shutil.which("healthscore")
    if found and Path(found).resolve() == exe.resolve():
        return "healthscore"
    return str(exe.resolve())

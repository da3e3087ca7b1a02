"""Docs kept true: every model key and CLI command is documented."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from pydantic import BaseModel

from healthscore import model as model_mod
from healthscore.cli import TREE, app

DOCS = Path(__file__).resolve().parents[1] / "docs"
README = DOCS.parent / "README.md"


def _keys(cls: type[BaseModel]) -> set[str]:
    return {f.alias or n for n, f in cls.model_fields.items()}


MODEL_KEYS = sorted(
    set().union(
        *(
            _keys(c)
            for c in (
                model_mod.ModelSpec,
                model_mod.MetricSpec,
                model_mod.MetricUse,
                model_mod.Pillar,
                model_mod.Segments,
                model_mod.Bands,
                model_mod.Percentile,
                model_mod.Probability,
                model_mod.Trends,
                model_mod.RapidDecline,
                model_mod.Slope,
                model_mod.StableHigh,
                model_mod.Rule,
                model_mod.Scorecard,
            )
        )
    )
)


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_every_model_key_is_documented(key):
    assert f"`{key}`" in (DOCS / "model.md").read_text(), f"docs/model.md does not mention `{key}`"


def _commands():
    """Every command of every group: `score`, `model suggest`, `auth user add` ..."""
    return [" ".join((*group, name)) for group, names in TREE.items() for name in names]


@pytest.mark.parametrize("command", _commands())
def test_every_cli_command_is_documented(command):
    assert f"healthscore {command}" in (DOCS / "cli.md").read_text()


def _options() -> dict[tuple[str, ...], set[str]]:
    """Every command of the whole tree (``("auth", "user", "add")``) -> its option names."""
    import typer.main

    found: dict[tuple[str, ...], set[str]] = {}

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        else:
            found[path] = {
                o
                for p in command.params
                if p.param_type_name == "option"
                for o in (*p.opts, *p.secondary_opts)
            } | {"--help"}

    walk(typer.main.get_command(app), ())
    return found


_FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
_INVOCATION = re.compile(r"healthscore ([a-z][a-z-]*(?: [a-z][a-z-]*)*)")


def _invocations(text: str, commands) -> list[tuple[tuple[str, ...], str, str]]:
    """(command, the text after its name, the snippet) for every `healthscore ...` in the
    code spans and shell blocks of ``text``: up to the next command, `&&`, `;` or `#`."""
    snippets = re.findall(r"`([^`\n]*healthscore [^`\n]*)`", text)
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S):
        snippets += [line for line in block.splitlines() if "healthscore " in line]
    found = []
    for snippet in snippets:
        for m in _INVOCATION.finditer(snippet):
            words = m.group(1).split()
            path = next(
                (
                    tuple(words[:i])
                    for i in range(len(words), 0, -1)
                    if tuple(words[:i]) in commands
                ),
                None,
            )
            if path is not None:
                rest = snippet[m.start() + len("healthscore " + " ".join(path)) :]
                found.append((path, re.split(r"healthscore |&&|;| #", rest)[0], snippet))
    return found


DOC_FILES = [README, *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(README.parent)))
def test_every_flag_the_docs_show_is_an_option_of_its_command(doc):
    """A command line in the docs names only options its command has: a flag renamed or
    dropped in the code fails here, not in a reader's first hour."""
    commands = _options()
    wrong = [
        f"healthscore {' '.join(path)}: {flag} (in `{snippet.strip()}`)"
        for path, rest, snippet in _invocations(doc.read_text(), commands)
        for flag in _FLAG.findall(rest)
        if flag not in commands[path]
    ]
    assert wrong == [], "\n".join(wrong)


def test_every_option_of_every_command_is_in_its_cli_md_line():
    """Each option `--help` lists is in docs/cli.md on a line that names its command
    (the table, a synopsis), or is one of the options that mean the same everywhere."""
    commands = _options()
    lines = (DOCS / "cli.md").read_text().splitlines()
    everywhere = {"--db", "--model", "-m", "--as-of", "--help", "--scorecard", "-s", "-f", "-o"}
    missing = []
    for path, options in commands.items():
        name = "healthscore " + " ".join(path)
        shown = {f for line in lines if name in line for f in _FLAG.findall(line)}
        for option in sorted(options - shown - everywhere):
            negated = option.startswith("--no-") and "--" + option[5:] in shown
            if not negated and "--no-" + option[2:] not in shown:
                missing.append(f"{name} {option}")
    assert missing == [], f"not in docs/cli.md: {missing}"


def test_the_demo_prints_account_ids_to_try_and_the_readme_sends_readers_there(demo_project):
    """The demo's book ends on the day it runs, so an id written in the README may have
    churned by the time someone reads it: the README names none, and the demo's own
    `try:` lines explain an account that is scored."""
    from rich.console import Console
    from typer.testing import CliRunner

    from healthscore.views import terminal

    console = Console(record=True, width=200)
    terminal.render_portfolio(console, demo_project, "healthscore")
    tries = [
        line.removeprefix("try: ").split(" && ")[-1]
        for line in console.export_text().splitlines()
        if line.startswith("try: ")
    ]
    explain = shlex.split(next(t for t in tries if " explain " in t))
    account = explain[2]
    assert re.fullmatch(r"ACC-\d{5}", account)
    project = ["--db", str(demo_project.db_path), "--model", str(demo_project.model_path)]
    res = CliRunner().invoke(app, [*explain[1:], *project], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert account in res.output and "Warning" not in res.output
    readme = README.read_text()
    assert re.findall(r"ACC-\d{5}", readme) == [], "the README names a demo account id"
    assert "an id from the try: lines" in readme


def test_the_values_a_synopsis_lists_are_the_values_its_option_takes():
    """`--format table|json|csv` in the docs names exactly the values the command's option
    takes (those `--help` lists): a format added or dropped shows here."""
    from enum import Enum

    import typer.main

    choices: dict[tuple[str, ...], dict[str, set[str]]] = {}

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
            return
        for p in command.params:
            kind = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if isinstance(kind, type) and issubclass(kind, Enum):
                for o in p.opts:
                    choices.setdefault(path, {})[o] = {e.value for e in kind}

    walk(typer.main.get_command(app), ())
    wrong, commands = [], _options()
    for doc in DOC_FILES:
        for path, rest, _snippet in _invocations(doc.read_text(), commands):
            for flag, values in re.findall(r"(--[\w-]+) ([\w-]+(?:\\?\|[\w-]+)+)", rest):
                listed = set(values.replace("\\", "").split("|"))
                takes = choices.get(path, {}).get(flag)
                if takes is not None and listed != takes:
                    wrong.append(
                        f"{doc.name}: healthscore {' '.join(path)} {flag}: {listed} != {takes}"
                    )
    assert wrong == [], "\n".join(wrong)

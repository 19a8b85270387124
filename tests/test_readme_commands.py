"""Every ``bench`` command README.md shows parses with today's CLI, and the ones that only read run for real.

Commands come from README's fenced code blocks (lines that start with ``bench`` or ``$ bench``, a trailing
``# comment`` dropped, ``\\`` continuations joined) and from inline code spans without placeholders
(``SUITE.toml``, ``CELL``, ``A B`` …). A renamed command or flag, a removed choice or a wrong argument count fails
here. Commands that only read the database (report, compare, claims, status, show, list, leaderboard) then run
against a small database built by the test; ``bench run`` runs as ``--dry-run``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from factories import add_run, flags_for_accuracy

from bench.cli import cli
from bench.results.store import Store

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PLACEHOLDER = re.compile(r"\b[A-Z]{2,}[A-Z_.]*\b|\bA B\b|\.\.\.|\|")
READ_ONLY = {"report", "compare", "claims", "status", "show", "list", "leaderboard"}


def _blocks(text: str) -> list[list[str]]:
    blocks, current = [], None
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line.strip())
    return blocks


def _from_code_blocks(text: str) -> list[str]:
    """Whole commands; in a block with ``$`` prompts only the prompted lines (the rest is their output)."""
    commands, pending = [], ""
    for block in _blocks(text):
        prompted = any(line.startswith("$ ") for line in block)
        for stripped in block:
            if pending:
                stripped, pending = pending + " " + stripped, ""
            elif prompted:
                if not stripped.startswith("$ "):
                    continue
                stripped = stripped[2:]
            if not stripped.startswith("bench "):
                continue
            if stripped.endswith("\\"):
                pending = stripped[:-1].strip()
                continue
            commands.append(stripped)
    return commands


def _from_inline_spans(text: str) -> list[str]:
    """Mentions in prose (``bench run --download``): a command name and flags, not always a whole command."""
    spans = re.findall(r"`(bench [^`]+)`", text)
    return [s for s in spans if not PLACEHOLDER.search(s.removeprefix("bench "))]


def _setup_commands(text: str) -> list[str]:
    return [m.strip() for m in re.findall(r"&& (bench run [^\s`]+)", text)]


def _strip_comment(command: str) -> str:
    words = shlex.split(command, comments=True)
    return shlex.join(words)


def readme_commands() -> list[str]:
    """Whole commands: code blocks and the set-up line."""
    text = README.read_text()
    found = [_strip_comment(c) for c in _from_code_blocks(text) + _setup_commands(text)]
    return list(dict.fromkeys(c for c in found if c.startswith("bench ")))


def readme_mentions() -> list[str]:
    text = README.read_text()
    return list(dict.fromkeys(_strip_comment(c) for c in _from_inline_spans(text)))


def _parse(args: list[str]) -> tuple[str, click.Context]:
    """Resolve the command and parse its options without running it (click raises on any mismatch)."""
    with cli.make_context("bench", list(args), resilient_parsing=False) as parent:
        name, command, rest = cli.resolve_command(parent, list(args))
        return name, command.make_context(name, rest, parent=parent)


def test_the_readme_shows_commands_of_every_kind():
    commands = readme_commands()
    names = {shlex.split(c)[1] for c in commands}
    assert {"run", "report", "compare", "status", "collect", "evaluate"} <= names, commands


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    args = shlex.split(command)[1:]
    if args[:1] == ["run"] and args[1:2] == ["suites/typo.toml"]:  # README's example of a bad file
        args[1] = "suites/quick.toml"
    name, _ = _parse(args)
    assert name == args[0]


@pytest.mark.parametrize("mention", readme_mentions())
def test_readme_mention_names_a_real_command_and_real_flags(mention):
    args = shlex.split(mention)[1:]
    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None, f"no command {args[0]!r}"
    flags = {opt for param in command.params for opt in param.opts}
    for token in args[1:]:
        if token.startswith("--"):
            assert token.split("=")[0] in flags, f"{mention}: {token} is not a flag of bench {args[0]}"
    choices = [p.type.choices for p in command.params if isinstance(p.type, click.Choice) and not p.opts[0].startswith("-")]
    positional = [t for t in args[1:] if not t.startswith("-")]
    if choices and positional:
        assert positional[0] in choices[0], f"{mention}: {positional[0]} is not one of {choices[0]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with bench.toml, the shipped suites and a small database of paper-method runs."""
    root = tmp_path_factory.mktemp("readme")
    (root / "suites").symlink_to(ROOT / "suites")
    (root / "runs").mkdir()
    db = f"sqlite:///{root / 'results.db'}"
    (root / "bench.toml").write_text(f'[bench]\ndb = "{db}"\nrun_dir = "runs"\nout_dir = "out/report"\n')
    store = Store(db)
    labels = np.repeat(np.arange(10), 6)
    counts = [100] * 5 + [10] * 5
    rng = np.random.default_rng(0)
    for method in ("srat-ldam", "drcb-ldam", "ldam", "ce"):
        for seed in range(3):
            for suite in ("cifar10_full", "quick"):
                right = rng.integers(1, 6, size=10)
                robust = np.minimum(right, rng.integers(0, 4, size=10))
                add_run(store, method=method, seed=seed, suite=suite, test_labels=labels, train_counts=counts,
                        correct={"clean": flags_for_accuracy(labels, right),
                                 "pgd-20": flags_for_accuracy(labels, robust)},
                        config={"eval_attacks": [{"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 20}]})
    return root


@pytest.mark.parametrize("command", [c for c in readme_commands() if shlex.split(c)[1] in READ_ONLY | {"run"}])
def test_readme_read_only_commands_run(project, monkeypatch, command):
    monkeypatch.chdir(project)
    args = shlex.split(command)[1:]
    if args[0] == "run":
        if args[1:2] == ["suites/typo.toml"]:
            pytest.skip("README's example of a bad suite file")
        args = [a for a in args if not a.startswith("--executor") and a not in ("slurm", "ray", "auto")
                and not a.startswith("--ray-address")]
        args.append("--dry-run")
    if args[0] == "show":
        pytest.skip("needs a real cell hash")
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, f"{command}\n{result.output}"


def test_readmes_bad_suite_example_is_what_bench_prints_now(tmp_path, monkeypatch):
    """The README's example of a one-line error (a misspelt method) is the current output, word for word: the list
    of valid methods grows with the registry."""
    text = README.read_text()
    shown = re.search(r"\$ bench run suites/typo\.toml\n(Error: [^\n]+)\n", text)
    assert shown, "README lost its example of a bad suite file"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "typo.toml").write_text(
        'name = "typo"\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = "srat-ldm"\n')
    result = CliRunner().invoke(cli, ["run", "suites/typo.toml"])
    assert result.exit_code == 2
    assert result.output.strip() == shown.group(1)

"""Help texts: what ``--help`` shows for every command and subcommand of both CLIs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import build_parser as trainer_parser
from workbench.cli import build_parser as workbench_parser
from workbench.cli import main as workbench_main


def every_parser(parser: argparse.ArgumentParser):
    """The parser and, depth first, every subcommand's parser under it."""
    yield parser
    for action in parser._actions:  # argparse keeps subcommands on a private attribute only
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from every_parser(sub)


@pytest.mark.parametrize("build", [trainer_parser, workbench_parser], ids=["trainer", "workbench"])
def test_help_shows_no_rest_markup(build):
    """Docstrings double as help texts; their reST ``literal`` markup must not reach the terminal."""
    parsers = list(every_parser(build()))
    assert len(parsers) > 2
    shown = {parser.prog: parser.format_help() for parser in parsers}
    assert {prog: text for prog, text in shown.items() if "``" in text} == {}
    assert all(text.startswith("usage: ") for text in shown.values())


@pytest.mark.parametrize("package", ["trainer", "workbench"])
def test_python_dash_m_runs_each_cli(package):
    """``python -m trainer`` and ``python -m workbench`` work where the console scripts are not on PATH."""
    result = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: ")


def test_a_reader_that_went_away_is_no_error_line(tmp_path):
    """``workbench export --out /dev/stdout | head`` closes the pipe early: the command stops quietly with exit
    1 (as Python advises), not with an error line about a broken pipe."""
    db = tmp_path / "wb.db"
    sample = Path(__file__).parents[2] / "datasets" / "instruction-sample.json"
    assert workbench_main(["import", "--db", str(db), str(sample)]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, as after head has read its lines
    command = ["export", "--db", str(db), "--format", "json", "--dataset", "instruction-sample", "--out", "/dev/stdout"]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "workbench", *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")

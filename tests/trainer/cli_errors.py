"""What every refused command must look like: exit code 2 and one ``error: ...`` line, no traceback."""

from __future__ import annotations

from trainer.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the trainer CLI in this process; return its only stderr line after checking it failed with exit 2."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # no traceback, no progress bar
    return err

"""Writing a file so that a crash or a full disk never leaves half of it: the one writer both towers use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from trainer.errors import UserError


def write_atomically(path: Path, text: str, *, private: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, flushed to disk, then a rename.

    A failed write (a full disk, a read-only folder, a kill) leaves no half-written file and keeps the earlier
    one. A device or pipe such as ``/dev/stdout`` is written in place. ``private`` makes the file readable by
    its owner only (password files); otherwise it gets the permissions the user's umask allows, as a plain
    open would. Any failure is a UserError naming ``path``.
    """
    temporary = None
    try:
        if path.exists() and not path.is_file():
            with path.open("w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            return
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BrokenPipeError:  # the reader of /dev/stdout went away (| head): not a failure to report here
        raise
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)

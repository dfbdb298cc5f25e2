"""Logins for the review app: a file of hashed passwords with roles, throttled sign-in, and ``workbench users``.

Why: ``--auth USER:PASS`` shows passwords in ``ps``, sign-in had no rate limit, and every login could do
everything. An auth file holds one ``NAME:ROLE:HASH`` per line (ROLE ``admin`` or ``reviewer``; HASH from
:func:`hash_password`, scrypt from the standard library); ``workbench users add`` writes it. Old ``NAME:PASS`` lines
still work, with a warning. Nothing here imports Gradio, so the command line stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import functools
import getpass
import hashlib
import hmac
import json
import math
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import UserError
from trainer.files import write_atomically

ADMIN = "admin"
REVIEWER = "reviewer"
ROLES = (ADMIN, REVIEWER)

SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1  # 16 MiB and ~50 ms a check: slow for guessing, fine for signing in
_SCHEME = "scrypt"
_MAX_SCRYPT_N = 2**20  # a hash asking for more memory than this is refused, not computed

MAX_FAILURES = 5  # failed attempts per user or per address within WINDOW_S before sign-in pauses
WINDOW_S = 300.0
BACKOFF_S = 1.0  # the first pause; each further one doubles, up to MAX_BACKOFF_S
MAX_BACKOFF_S = 60.0

AUTH_MESSAGE = (
    "Sign in: your login is your reviewer name. After 5 wrong passwords sign-in pauses for a while; "
    "if nothing happens, wait a minute and try again."
)


# ---------------------------------------------------------------------------------------------------- hashing


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$SALT$HASH`` (base64), with a fresh 16-byte salt: safe to keep in a file."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join((_SCHEME, str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant-time comparison)."""
    n, r, p, salt, digest = _parse_hash(password_hash)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


def is_password_hash(text: str) -> bool:
    """Whether ``text`` is a well-formed :func:`hash_password` string."""
    try:
        _parse_hash(text)
    except ValueError:
        return False
    return True


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = 32) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * (n + p + 2), dklen=dklen)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError("not a scrypt$N$r$p$SALT$HASH string")
    try:
        n, r, p = (int(part) for part in parts[1:4])
        salt, digest = (base64.b64decode(part, validate=True) for part in parts[4:6])
    except ValueError as exc:
        raise ValueError(f"bad number or base64 in the hash: {exc}") from None
    if n < 2 or n & (n - 1) or n > _MAX_SCRYPT_N or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return n, r, p, salt, digest


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


# ---------------------------------------------------------------------------------------------------- users


@dataclass(frozen=True)
class User:
    """One login: its role and either a password hash (``hashed``) or an old plain-text password."""

    role: str
    secret: str = field(repr=False)
    hashed: bool = True

    def verify(self, password: str) -> bool:
        if self.hashed:
            return verify_password(password, self.secret)
        return hmac.compare_digest(password.encode("utf-8"), self.secret.encode("utf-8"))


@dataclass(frozen=True)
class Attempt:
    """The outcome of one sign-in: ``ok``, or refused unchecked for ``retry_after`` more seconds (> 0)."""

    ok: bool
    retry_after: float = 0.0


@dataclass
class _Strikes:
    failures: deque[float] = field(default_factory=deque)  # times of failed attempts within the window
    level: int = 0  # pauses so far in this window; the next lasts BACKOFF_S * 2**level
    blocked_until: float = -math.inf
    pending: int = 0  # attempts being checked right now (in other threads)


class Logins:
    """Users with roles, and sign-in that pauses after repeated failures (thread-safe).

    After ``max_failures`` failed attempts for one username, or from one address, within ``window_s`` seconds,
    further attempts for it are refused without checking the password, for ``backoff_s`` seconds, doubling with
    each further failure up to ``max_backoff_s``. A success clears that username's record (not the address's,
    so one valid login cannot be used to keep guessing other names). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        users: Mapping[str, User],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        for name, user in users.items():
            if user.role not in ROLES:
                raise ValueError(f"{name}: unknown role {user.role!r}")
        self._users = dict(users)
        self._clock = clock
        self.max_failures, self.window_s = max_failures, window_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._lock = threading.Lock()
        self._strikes: dict[tuple[str, str], _Strikes] = {}
        self.checked = 0  # passwords actually verified
        self.refused = 0  # attempts refused unchecked while paused

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, username: object) -> bool:
        return username in self._users

    def names(self) -> list[str]:
        return list(self._users)

    def role(self, username: str | None) -> str | None:
        """``admin``, ``reviewer``, or None for an unknown (or no) username."""
        user = self._users.get(username) if username is not None else None
        return user.role if user else None

    def is_admin(self, username: str | None) -> bool:
        return self.role(username) == ADMIN

    def check(self, username: str, password: str, address: str | None = None) -> bool:
        """Whether the password is right; False also while this user or address is paused."""
        return self.attempt(username, password, address).ok

    def attempt(self, username: str, password: str, address: str | None = None) -> Attempt:
        """Like :meth:`check`, but says how long to wait when the attempt was refused unchecked."""
        keys = self._keys(username, address)
        with self._lock:
            wait = self._wait(keys, self._clock())
            if wait > 0:
                self.refused += 1
                return Attempt(False, wait)
            for key in keys:
                self._strikes.setdefault(key, _Strikes()).pending += 1
            self.checked += 1
        ok = False
        try:
            ok = self._verify(username, password)  # outside the lock: scrypt takes ~50 ms
        finally:
            with self._lock:
                self._record(keys, ok, self._clock())
        return Attempt(ok)

    def retry_after(self, username: str | None = None, address: str | None = None) -> float:
        """Seconds until this username / address may try again (0: now)."""
        with self._lock:
            return self._wait(self._keys(username, address), self._clock())

    def _verify(self, username: str, password: str) -> bool:
        user = self._users.get(username)
        if user is None:
            verify_password(password, _dummy_hash())  # same time as a known name: no probing for names
            return False
        return user.verify(password)

    @staticmethod
    def _keys(username: str | None, address: str | None) -> list[tuple[str, str]]:
        keys = []
        if username is not None:
            keys.append(("user", username))
        if address is not None:
            keys.append(("address", address))
        return keys

    def _wait(self, keys: Iterable[tuple[str, str]], now: float) -> float:
        wait = 0.0
        for key in keys:
            strikes = self._strikes.get(key)
            if strikes is None:
                continue
            self._prune(key, strikes, now)
            if strikes.blocked_until > now:
                wait = max(wait, strikes.blocked_until - now)
            elif strikes.pending >= max(self.max_failures - len(strikes.failures), 1):
                # attempts in flight could use up what is left: refuse rather than check more than allowed
                wait = max(wait, self._pause(strikes.level))
        return wait

    def _record(self, keys: list[tuple[str, str]], ok: bool, now: float) -> None:
        for key in keys:
            strikes = self._strikes[key]
            strikes.pending -= 1
            if ok and key[0] == "user":
                strikes.failures.clear()
                strikes.level, strikes.blocked_until = 0, -math.inf
            elif not ok:
                strikes.failures.append(now)
                if len(strikes.failures) >= self.max_failures:
                    strikes.blocked_until = max(strikes.blocked_until, now + self._pause(strikes.level))
                    strikes.level += 1
            self._prune(key, strikes, now)
        if len(self._strikes) > 4096:  # names and addresses that stopped failing long ago
            for key, strikes in list(self._strikes.items()):
                self._prune(key, strikes, now)

    def _prune(self, key: tuple[str, str], strikes: _Strikes, now: float) -> None:
        while strikes.failures and strikes.failures[0] <= now - self.window_s:
            strikes.failures.popleft()
        if not strikes.failures and strikes.blocked_until <= now:
            strikes.level = 0
            if not strikes.pending:
                self._strikes.pop(key, None)

    def _pause(self, level: int) -> float:
        return min(self.backoff_s * 2 ** min(level, 32), self.max_backoff_s)


def role_of(logins: Logins | None, username: str | None) -> str | None:
    """A signed-in user's role; with no logins at all (this machine only) everyone is ``admin``."""
    return ADMIN if logins is None else logins.role(username)


# ---------------------------------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class _Line:
    number: int
    text: str
    name: str | None = None  # None: a comment or blank line
    user: User | None = None


def _parse_file(path: Path, *, missing_ok: bool = False) -> list[_Line]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise UserError(f"{path}: auth file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the auth file ({exc})") from None
    lines: list[_Line] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            lines.append(_Line(number, raw))
            continue
        name, user = _parse_line(stripped, f"{path} line {number}")
        if name in seen:
            raise UserError(f"{path} line {number}: {name!r} is already on line {seen[name]}")
        seen[name] = number
        lines.append(_Line(number, raw, name, user))
    return lines


def _parse_line(line: str, where: str) -> tuple[str, User]:
    parts = line.split(":", 2)
    if len(parts) == 3 and parts[2].startswith(_SCHEME + "$"):
        name, role, password_hash = (part.strip() for part in parts)
        if role not in ROLES:
            raise UserError(f"{where}: unknown role {role!r} (admin or reviewer)")
        try:
            _parse_hash(password_hash)
        except ValueError as exc:
            raise UserError(f"{where}: bad password hash ({exc}); make a new one with `workbench users add`") from None
        user = User(role, password_hash)
    else:  # the old USER:PASS (the password may itself hold colons)
        name, sep, password = line.partition(":")
        name = name.strip()
        if not sep or not password:
            raise UserError(f"{where}: expected NAME:ROLE:HASH (from `workbench users add`) or the old USER:PASS")
        user = User(REVIEWER, password, hashed=False)
    if not name:
        raise UserError(f"{where}: empty login name")
    return name, user


def read_auth_file(path: str | Path) -> dict[str, User]:
    """Users from an auth file, in file order; a mistake is a UserError naming the file and line."""
    return {line.name: line.user for line in _parse_file(Path(path)) if line.name and line.user}


def load_logins(
    auth: Sequence[str] = (),
    auth_file: str | Path | None = None,
    admins: Sequence[str] = (),
    *,
    warn: Callable[[str], None] | None = None,
) -> Logins | None:
    """Logins from ``--auth USER:PASS`` pairs, an auth file and ``--admin`` names; None when there are none.

    Plain-text passwords (on the command line or in old files) and a set of logins without an admin are
    accepted with a one-line warning each (to stderr unless ``warn`` says otherwise).
    """
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    users: dict[str, User] = {}
    if auth_file is not None:
        users.update(read_auth_file(auth_file))
        plain = [name for name, user in users.items() if not user.hashed]
        if plain:
            warn(
                f"{auth_file} keeps {len(plain)} password(s) in plain text ({', '.join(plain)}); "
                f"hash them with `workbench users add --file {auth_file} NAME`"
            )
    for pair in auth:
        name, sep, password = str(pair).partition(":")
        name = name.strip()
        if not sep or not name or not password:
            raise UserError(f"--auth: expected USER:PASS, got {name!r}...")
        if name in users:
            raise UserError(f"--auth {name}: that login is given twice")
        users[name] = User(REVIEWER, password, hashed=False)
    if auth:
        warn(
            "--auth shows passwords to anyone who can run `ps` (and keeps them in shell history); "
            "use `workbench users add --file users.txt NAME` and `--auth-file users.txt`"
        )
    for name in admins:
        if name not in users:
            raise UserError(f"--admin {name}: no such login (known: {', '.join(users) or 'none'})")
        users[name] = User(ADMIN, users[name].secret, users[name].hashed)
    if not users:
        return None
    if not any(user.role == ADMIN for user in users.values()):
        warn("no admin login (--admin NAME, or role admin in the auth file): nobody can upload or export in the app")
    return Logins(users)


def _check_name(name: str) -> str:
    if not name or name != name.strip() or ":" in name or name.startswith("#") or not name.isprintable():
        raise UserError(f"bad login name {name!r}: no colons, no leading '#', spaces or control characters")
    return name


def _render(lines: Iterable[_Line]) -> str:
    return "".join(line.text + "\n" for line in lines)


def add_user(path: str | Path, name: str, password: str, role: str | None = None) -> tuple[bool, str]:
    """Create or update NAME's line (hashed); a new login is a reviewer unless ``role`` says, an existing one
    keeps its role. Returns (created, role)."""
    path, name = Path(path), _check_name(name)
    if not password:
        raise UserError("empty password")
    if role is not None and role not in ROLES:
        raise UserError(f"unknown role {role!r} (admin or reviewer)")
    lines = _parse_file(path, missing_ok=True)
    index = next((i for i, line in enumerate(lines) if line.name == name), None)
    old_role = lines[index].user.role if index is not None and lines[index].user else REVIEWER
    role = role or old_role
    entry = f"{name}:{role}:{hash_password(password)}"
    if index is None:
        lines.append(_Line(0, entry, name))
    else:
        lines[index] = _Line(lines[index].number, entry, name)
    write_atomically(path, _render(lines), private=True)
    return index is None, role


def remove_user(path: str | Path, name: str) -> None:
    """Drop NAME's line, keeping every other line as it was."""
    path = Path(path)
    lines = _parse_file(path)
    kept = [line for line in lines if line.name != name]
    if len(kept) == len(lines):
        raise UserError(f"{path}: no login named {name!r}")
    write_atomically(path, _render(kept), private=True)


def list_users(path: str | Path) -> list[tuple[str, str, bool]]:
    """(name, role, hashed) for each login in the file: never the passwords or hashes."""
    return [(name, user.role, user.hashed) for name, user in read_auth_file(path).items()]


def read_new_password(name: str) -> str:
    """Asked twice at a terminal (not echoed); otherwise the first line of stdin, so scripts can pipe it in."""
    if sys.stdin is not None and sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the passwords differ")
    else:
        password = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
    if not password:
        raise UserError("empty password")
    return password


# ---------------------------------------------------------------------------------------------------- Gradio


_CLIENT_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("workbench_login_address", default=None)


def _too_many(wait: float) -> tuple[str, str]:
    seconds = str(max(1, math.ceil(wait)))
    return f"Too many attempts; try again in {seconds} s", seconds


class LoginGuard:
    """ASGI middleware around Gradio's ``POST /login``: refuses a paused address with 429 before the form is
    read, and hands the socket's client address (never a forwarded header) to the ``auth`` callable."""

    def __init__(self, app: Any, logins: Logins) -> None:
        self.app, self.logins = app, logins

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not _is_login_path(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else None
        wait = self.logins.retry_after(None, address)
        if wait > 0:
            detail, seconds = _too_many(wait)
            body = json.dumps({"detail": detail}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", seconds.encode()),
            ]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        token = _CLIENT_ADDRESS.set(address)
        try:
            await self.app(scope, receive, send)
        finally:
            _CLIENT_ADDRESS.reset(token)


def _is_login_path(scope: dict) -> bool:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path in ("/login", "/login/")


def launch_options(logins: Logins | None) -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``: throttled sign-in against ``logins`` (none without logins).

    A refused attempt answers HTTP 429 ``{"detail": "Too many attempts; try again in N s"}``; a wrong password
    answers Gradio's own 400. Call it once per launch (Gradio changes the ``app_kwargs`` dict it gets).
    """
    if logins is None:
        return {}
    from fastapi import HTTPException  # Gradio's dependencies, needed only when serving
    from starlette.middleware import Middleware

    async def auth(username: str, password: str) -> bool:
        address = _CLIENT_ADDRESS.get()
        result = await asyncio.to_thread(logins.attempt, username, password, address)  # keep scrypt off the loop
        if result.retry_after > 0:
            detail, seconds = _too_many(result.retry_after)
            raise HTTPException(status_code=429, detail=detail, headers={"Retry-After": seconds})
        return result.ok

    return {
        "auth": auth,
        "auth_message": AUTH_MESSAGE,
        "app_kwargs": {"middleware": [Middleware(LoginGuard, logins=logins)]},
    }


# ---------------------------------------------------------------------------------------------------- CLI


def _add_cli(args: argparse.Namespace) -> None:
    password = read_new_password(args.name)
    created, role = add_user(args.file, args.name, password, args.role)
    print(f"{'added' if created else 'updated'} {args.name} ({role}) in {args.file}")


def _list_cli(args: argparse.Namespace) -> None:
    for name, role, hashed in list_users(args.file):
        print(f"{name}\t{role}" + ("" if hashed else "\tplain-text password: run `workbench users add` for it"))


def _remove_cli(args: argparse.Namespace) -> None:
    remove_user(args.file, args.name)
    print(f"removed {args.name} from {args.file}")


def add_cli(subparsers) -> None:
    """Register ``users add|list|remove``."""
    parser = subparsers.add_parser(
        "users",
        help="manage the review app's logins (an auth file of hashed passwords)",
        description="Manage an auth file for `workbench serve --auth-file`: one NAME:ROLE:HASH per line, "
        "ROLE admin (may upload and export) or reviewer, passwords hashed with scrypt.",
    )
    commands = parser.add_subparsers(dest="users_command", required=True)
    add = commands.add_parser(
        "add",
        help="add a login or change its password/role",
        description="Add NAME or change its password (and role). The password is asked twice at a terminal, "
        "or read from the first line of stdin when stdin is not a terminal (e.g. `printf '%s\\n' \"$PW\" | ...`).",
    )
    add.add_argument("--file", required=True, type=Path, help="auth file (created with mode 0600)")
    add.add_argument("name", help="login name, which is also the reviewer name")
    add.add_argument("--role", choices=ROLES, help="default: reviewer for a new login, unchanged for an existing one")
    add.set_defaults(func=_add_cli)
    listing = commands.add_parser("list", help="print names and roles (never passwords)")
    listing.add_argument("--file", required=True, type=Path)
    listing.set_defaults(func=_list_cli)
    remove = commands.add_parser("remove", help="remove a login")
    remove.add_argument("--file", required=True, type=Path)
    remove.add_argument("name")
    remove.set_defaults(func=_remove_cli)

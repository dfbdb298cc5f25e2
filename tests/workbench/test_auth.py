"""Logins: hashed auth files with roles, ``workbench users``, throttled sign-in, and Gradio's /login end to end."""

from __future__ import annotations

import io
import socket
import stat
import sys
import threading
from pathlib import Path

import pytest

from trainer.errors import UserError
from workbench import auth
from workbench.auth import ADMIN, REVIEWER, Logins, User, hash_password, load_logins, verify_password
from workbench.cli import main

FAST = {"n": 1024}  # a cheap scrypt for tests; the default costs ~50 ms a check


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _logins(clock: Clock, **options) -> Logins:
    users = {"ann": User(ADMIN, hash_password("right", **FAST)), "ben": User(REVIEWER, "plain", hashed=False)}
    return Logins(users, clock=clock, **options)


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


# ---------------------------------------------------------------------------------------------------- hashing


def test_hash_round_trip_and_wrong_password():
    password_hash = hash_password("s3cret: with colons and ünïcode")
    assert password_hash.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret: with colons and ünïcode", password_hash)
    assert not verify_password("s3cret", password_hash)
    assert hash_password("same", **FAST) != hash_password("same", **FAST)  # a fresh salt each time
    assert not auth.is_password_hash("scrypt$16384$8$1$not base64!$AAAA")


# ---------------------------------------------------------------------------------------------------- the file


def test_auth_file_reads_roles_old_lines_and_comments(tmp_path):
    ann = hash_password("a", **FAST)
    path = tmp_path / "users.txt"
    path.write_text(f"# reviewers\nann:admin:{ann}\n\n  ben:pa:ss  \ncy:reviewer:{hash_password('c', **FAST)}\n")
    users = auth.read_auth_file(path)
    assert list(users) == ["ann", "ben", "cy"]
    assert (users["ann"].role, users["ann"].hashed) == (ADMIN, True)
    assert (users["ben"].role, users["ben"].hashed, users["ben"].verify("pa:ss")) == (REVIEWER, False, True)
    assert "pa:ss" not in repr(users["ben"]) and ann not in repr(users["ann"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok:1\nnocolon\n", "line 2: expected NAME:ROLE:HASH"),
        ("# c\nann:boss:scrypt$16384$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==\n", "line 2: unknown role 'boss'"),
        ("ann:admin:scrypt$16384$8$1$!!$AAAA\n", "line 1: bad password hash"),
        ("ann:x\n\nann:y\n", "line 3: 'ann' is already on line 1"),
        (":pw\n", "line 1: empty login name"),
        ("ann:\n", "line 1: expected NAME:ROLE:HASH"),
    ],
)
def test_auth_file_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "users.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as caught:
        auth.read_auth_file(path)
    assert str(caught.value).startswith(f"{path} line ")


def test_missing_auth_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="auth file not found"):
        load_logins(auth_file=tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------------------------- users


def test_users_add_twice_updates_keeps_other_lines_and_is_private(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.txt"
    _stdin(monkeypatch, "first-pass\n")
    assert main(["users", "add", "--file", str(path), "ann", "--role", "admin"]) == 0
    path.write_text("# keep me\n" + path.read_text() + "ben:old-plain\n")
    _stdin(monkeypatch, "second-pass\nignored\n")
    assert main(["users", "add", "--file", str(path), "ann"]) == 0  # no --role: stays admin
    _stdin(monkeypatch, "ben-pass\n")
    assert main(["users", "add", "--file", str(path), "ben"]) == 0
    out = capsys.readouterr().out
    assert "added ann (admin)" in out and "updated ann (admin)" in out and "updated ben (reviewer)" in out

    text = path.read_text()
    assert text.startswith("# keep me\nann:admin:scrypt$") and text.count("ann:") == 1 and text.count("ben:") == 1
    assert "first-pass" not in text and "second-pass" not in text and "ben-pass" not in text and "old-plain" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = auth.read_auth_file(path)
    assert users["ann"].verify("second-pass") and not users["ann"].verify("first-pass")
    assert users["ben"].hashed and users["ben"].verify("ben-pass")
    assert [p.name for p in tmp_path.iterdir()] == ["users.txt"]  # no temporary file left behind


def test_users_list_shows_names_and_roles_never_hashes(tmp_path, capsys):
    path = tmp_path / "users.txt"
    auth.add_user(path, "ann", "pw", ADMIN)
    auth.add_user(path, "ben", "pw")
    with path.open("a") as stream:
        stream.write("cy:plain\n")
    assert main(["users", "list", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["ann\tadmin", "ben\treviewer"]
    assert "cy\treviewer\tplain-text" in out and "scrypt" not in out and "plain\n" not in out


def test_users_remove_and_errors(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.txt"
    auth.add_user(path, "ann", "pw", ADMIN)
    auth.add_user(path, "ben", "pw")
    assert main(["users", "remove", "--file", str(path), "ann"]) == 0
    assert list(auth.read_auth_file(path)) == ["ben"]
    assert main(["users", "remove", "--file", str(path), "ann"]) == 2
    assert "error: " in capsys.readouterr().err
    _stdin(monkeypatch, "\n")
    assert main(["users", "add", "--file", str(path), "cy"]) == 2
    assert "error: empty password" in capsys.readouterr().err
    for bad in ("a:b", "#x", " x", ""):
        with pytest.raises(UserError, match="bad login name"):
            auth.add_user(path, bad, "pw")


def test_users_add_asks_twice_at_a_terminal(tmp_path, monkeypatch, capsys):
    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(auth.getpass, "getpass", lambda prompt: next(answers))
    path = tmp_path / "users.txt"
    assert main(["users", "add", "--file", str(path), "ann"]) == 2
    assert "the passwords differ" in capsys.readouterr().err and not path.exists()
    assert main(["users", "add", "--file", str(path), "ann"]) == 0
    assert auth.read_auth_file(path)["ann"].verify("same")


# ---------------------------------------------------------------------------------------------------- load_logins


def test_plain_auth_warns_and_makes_reviewers_unless_admin(capsys):
    logins = load_logins(["ann:pa:ss", "ben:x"], admins=["ann"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: --auth shows passwords" in err and "workbench users add" in err
    assert logins.check("ann", "pa:ss") and logins.role("ann") == ADMIN and logins.role("ben") == REVIEWER
    assert logins.role("nobody") is None and logins.role(None) is None

    load_logins(["ann:pw"])
    assert "nobody can upload or export" in capsys.readouterr().err
    assert load_logins([], None) is None and auth.role_of(None, None) == ADMIN


def test_plain_auth_file_warns_and_hashed_file_is_quiet(tmp_path, capsys):
    old = tmp_path / "old.txt"
    old.write_text("ann:pw\n")
    load_logins(auth_file=old, admins=["ann"])
    assert "plain text (ann)" in capsys.readouterr().err
    new = tmp_path / "users.txt"
    auth.add_user(new, "ann", "pw", ADMIN)
    auth.add_user(new, "ben", "pw")
    logins = load_logins(auth_file=new)
    assert capsys.readouterr().err == ""
    assert logins.names() == ["ann", "ben"] and logins.is_admin("ann") and not logins.is_admin("ben")


def test_bad_auth_flags_are_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="--admin cy: no such login"):
        load_logins(["ann:pw"], admins=["cy"])
    with pytest.raises(UserError, match="given twice"):
        load_logins(["ann:pw", "ann:other"])
    assert main(["serve", "--db", str(tmp_path / "x.db"), "--auth", "nopassword"]) == 2
    assert "error: --auth: expected USER:PASS" in capsys.readouterr().err


def test_serve_passes_logins_and_upload_limit(tmp_path, monkeypatch, capsys):
    from workbench import serve

    calls = {}
    monkeypatch.setattr(serve, "serve", lambda db, **kwargs: calls.update(kwargs, db=db))
    path = tmp_path / "users.txt"
    auth.add_user(path, "ann", "pw")
    argv = ["serve", "--db", str(tmp_path / "x.db"), "--auth-file", str(path), "--admin", "ann", "--max-upload-mb", "7"]
    assert main(argv) == 0
    assert calls["max_upload_mb"] == 7 and calls["logins"].is_admin("ann") and capsys.readouterr().err == ""
    assert main(["serve", "--db", "x.db"]) == 0 and calls["logins"] is None and calls["max_upload_mb"] == 50
    assert calls["blind_datasets"] == ()
    assert main(["serve", "--db", "x.db", "--blind-review", "a", "--blind-review", "b c"]) == 0
    assert calls["blind_datasets"] == ("a", "b c")
    with pytest.raises(SystemExit):
        main(["serve", "--db", "x.db", "--max-upload-mb", "0"])


# ---------------------------------------------------------------------------------------------------- throttling


def test_five_failures_pause_even_the_right_password_and_the_pause_doubles():
    clock = Clock()
    logins = _logins(clock)
    for _ in range(5):
        assert logins.attempt("ann", "wrong") == auth.Attempt(False)
    assert logins.attempt("ann", "right") == auth.Attempt(False, 1.0)  # refused unchecked
    assert logins.checked == 5 and logins.refused == 1
    pauses = []
    for _ in range(8):
        pauses.append(logins.retry_after("ann"))
        clock.now += pauses[-1]
        assert not logins.check("ann", "wrong")  # one attempt after each pause, then a longer one
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60]
    clock.now += 60
    assert logins.check("ann", "right")
    assert logins.retry_after("ann") == 0
    for _ in range(4):  # the success cleared ann's record: four more failures are allowed again
        assert not logins.check("ann", "wrong")
    assert logins.retry_after("ann") == 0 and logins.check("ann", "right")


def test_failures_expire_after_the_window():
    clock = Clock()
    logins = _logins(clock, window_s=300)
    for _ in range(4):
        logins.check("ben", "wrong")
    clock.now += 301
    for _ in range(4):
        logins.check("ben", "wrong")
    assert logins.retry_after("ben") == 0 and logins.check("ben", "plain")


def test_one_users_failures_do_not_block_other_users_or_addresses():
    clock = Clock()
    logins = _logins(clock)
    for _ in range(20):
        logins.check("ann", "wrong", "10.0.0.1")
    assert logins.retry_after("ann", None) > 0 and logins.retry_after(None, "10.0.0.1") > 0
    assert logins.check("ben", "plain", "10.0.0.2")  # another user from another address
    assert not logins.check("ann", "right", "10.0.0.2")  # ann is paused wherever she signs in from
    assert not logins.check("ben", "plain", "10.0.0.1")  # and so is the guessing address, for every name


def test_one_address_guessing_many_names_is_paused():
    logins = _logins(Clock())
    for number in range(5):
        assert not logins.check(f"user{number}", "guess", "10.0.0.9")
    assert logins.attempt("ann", "right", "10.0.0.9").retry_after == 1.0
    assert logins.check("ann", "right", "10.0.0.8")


def test_concurrent_failures_are_counted_exactly():
    clock = Clock()  # frozen: no pause ever ends during the test
    logins = _logins(clock)
    results: list[bool] = []
    lock = threading.Lock()

    def guess() -> None:
        for _ in range(50):
            ok = logins.check("ann", "wrong", "10.0.0.1")
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 400 and not any(results)
    assert (logins.checked, logins.refused) == (5, 395)  # no more than five passwords were ever checked
    assert logins.retry_after("ann") == 1.0


# ---------------------------------------------------------------------------------------------------- Gradio


@pytest.fixture
def gradio_login(monkeypatch):
    """A trivial Gradio app behind ``launch_options``, its URL and the test's clock."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    gr = pytest.importorskip("gradio")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = Clock()
    logins = _logins(clock)
    with gr.Blocks() as demo:
        gr.Markdown("signed in")
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        ssr_mode=False,
        **auth.launch_options(logins),
    )
    try:
        yield f"http://127.0.0.1:{port}", logins, clock
    finally:
        demo.close()


def test_gradio_login_is_throttled_end_to_end(gradio_login):
    import httpx

    url, logins, clock = gradio_login
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/config").status_code == 401
        codes = [
            client.post("/login", data={"username": "ann", "password": f"guess{n}"}).status_code for n in range(20)
        ]
        assert codes == [400] * 5 + [429] * 15
        refused = client.post("/login/", files={"username": (None, "ann"), "password": (None, "right")})  # as a browser
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json() == {"detail": "Too many attempts; try again in 1 s"}
        assert logins.checked == 5  # the refused ones never reached a password check

        clock.now += 1
        accepted = client.post("/login", files={"username": (None, "ann"), "password": (None, "right")})
        assert accepted.status_code == 200 and accepted.json() == {"success": True}
        assert client.get("/config").status_code == 200


def test_gradio_login_refuses_a_paused_user_from_a_fresh_address(gradio_login):
    import httpx

    url, logins, clock = gradio_login
    for _ in range(5):
        logins.check("ann", "wrong", "192.0.2.1")  # someone elsewhere guessed ann's password
    with httpx.Client(base_url=url, timeout=10) as client:
        refused = client.post("/login", data={"username": "ann", "password": "right"})
        assert refused.status_code == 429 and refused.json()["detail"].startswith("Too many attempts")
        assert client.post("/login", data={"username": "ben", "password": "plain"}).status_code == 200
    assert logins.retry_after(None, "127.0.0.1") == 0


def test_auth_module_does_not_import_gradio():
    import subprocess

    code = "import sys, workbench.cli; assert 'gradio' not in sys.modules and 'fastapi' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])

"""Tokens that expire: created with an expiry (HTTP and CLI), refused with a 401 that says
they expired, listed with their expiry (API, CLI), revoked from the CLI; older databases get
the column; and README's token command works beside a running demo."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tabgrid.cli import commands as cli
from tabgrid.settings import Settings, sqlite_url
from tabgrid.store import Store, tokens
from test_http_hardening import LiveServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(Settings(db=sqlite_url(tmp_path), data_dir=tmp_path)) as live:
        yield live


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def test_an_expired_token_is_refused_with_a_401_that_says_so(server: LiveServer) -> None:
    now = time.time()
    # Made 100 s ago, expired 50 s ago (create refuses an expiry in its own past).
    _, expired = server.store.tx(tokens.create, "submitter", "old", now - 100, now - 50)
    _, live = server.store.create_token("submitter", "new", now + 3600)
    r = httpx.get(f"{server.url}/api/v1/jobs", headers=bearer(expired))
    assert r.status_code == 401
    assert r.json()["detail"] == (
        f"the token expired at {utc(now - 50)}: ask an operator for a new one"
    )
    assert r.headers["www-authenticate"] == 'Bearer realm="tabgrid", error="invalid_token"'
    assert httpx.get(f"{server.url}/api/v1/jobs", headers=bearer(live)).status_code == 200
    unknown = httpx.get(f"{server.url}/api/v1/jobs", headers=bearer("tg_nothing"))
    assert unknown.json()["detail"] == (
        "the token is unknown or was revoked: ask an operator for a new one"
    )
    with pytest.raises(ValueError, match="a token's expiry must lie in the future"):
        server.store.create_token("submitter", "x", now - 1)


def test_tokens_made_over_http_expire_and_list_their_expiry(server: LiveServer) -> None:
    _, operator = server.token("operator", "root")
    before = time.time()
    r = httpx.post(
        f"{server.url}/api/v1/tokens",
        headers=operator,
        json={"role": "submitter", "name": "alice", "expires_in_s": 86400},
    )
    assert r.status_code == 201
    created = r.json()
    assert before + 86400 <= created["expires_at"] <= time.time() + 86400
    listed = httpx.get(f"{server.url}/api/v1/tokens", headers=operator).json()["tokens"]
    assert [(t["name"], t["expires_at"]) for t in listed] == [
        ("root", None),
        ("alice", created["expires_at"]),
    ]
    entries = httpx.get(f"{server.url}/api/v1/audit", headers=operator).json()["entries"]
    assert entries[0]["detail"] == f"submitter 'alice', expires {utc(created['expires_at'])}"
    bad = httpx.post(
        f"{server.url}/api/v1/tokens",
        headers=operator,
        json={"role": "submitter", "name": "x", "expires_in_s": 0},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"] == ["$.expires_in_s: Expected `float` >= 1.0"]


def test_cli_creates_lists_and_revokes_tokens_with_expiry(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = ["--data", str(tmp_path)]
    assert cli.main(["token", "create", "--role", "submitter", "--name", "a", *data]) == 0
    capsys.readouterr()
    args = ["token", "create", "--role", "submitter", "--name", "b", "--expires", "30d"]
    assert cli.main([*args, *data]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    db = tmp_path / "tabgrid.db"
    match = re.fullmatch(
        rf"token 2 \(submitter, b, expires (\S+ \S+)\) in {re.escape(str(db))}:\n"
        "It is shown only this once; keep it somewhere safe.\n",
        out.err,
    )
    assert match, out.err
    store = Store(sqlite_url(tmp_path))
    try:
        (row,) = [r for r in store.tx(tokens.list_all) if r["name"] == "b"]
        assert 30 * 86400 - 60 < row["expires_at"] - time.time() <= 30 * 86400
        assert match.group(1) == time.strftime("%Y-%m-%d %H:%M", time.localtime(row["expires_at"]))
        assert store.tx(tokens.lookup, secret) is not None
        assert store.tx(tokens.lookup, secret, row["expires_at"] + 1) is None
    finally:
        store.close()

    assert cli.main(["token", "list", *data]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["ID", "ROLE", "NAME", "CREATED", "REVOKED", "EXPIRES"]
    cells = [re.split(r"\s{2,}", row) for row in rows[1:]]
    assert [(c[0], c[2], c[4], c[5]) for c in cells] == [
        ("1", "a", "-", "never"),
        ("2", "b", "-", match.group(1)),
    ]

    assert cli.main(["token", "revoke", "2", *data]) == 0
    assert capsys.readouterr().out == (
        f"token 2 revoked in {db}; its open streams end within seconds\n"
    )
    assert cli.main(["token", "revoke", "2", *data]) == 1
    assert capsys.readouterr().err == (
        f"error: token 2 does not exist in {db} or is already revoked "
        "(see them with: tabgrid token list)\n"
    )
    assert cli.main(["token", "list", *data]) == 0
    assert "(expired)" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("30x", "'30x' is not a duration: write a whole number and a unit, s, m, h, d or w"),
        ("0d", "'0d' is not a duration"),
        ("d", "'d' is not a duration"),
        ("5000w", "'5000w' is more than 10 years; revoke tokens instead"),
    ],
)
def test_a_bad_expiry_is_named(tmp_path: Path, capsys, text: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    args = ["token", "create", "--role", "submitter", "--expires", text, "--data", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert f"argument --expires: {problem}" in capsys.readouterr().err
    assert not (tmp_path / "tabgrid.db").exists()


def test_an_expired_token_shows_as_expired_in_the_list(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    store = Store(sqlite_url(tmp_path))
    now = time.time()
    try:
        store.tx(tokens.create, "submitter", "gone", now - 100, now - 50)
    finally:
        store.close()
    assert cli.main(["token", "list", "--data", str(tmp_path)]) == 0
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(now - 50))
    cells = re.split(r"\s{2,}", capsys.readouterr().out.splitlines()[1])
    assert cells[2:] == ["gone", cells[3], "-", f"{when} (expired)"]


def test_an_older_database_gets_the_expiry_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR, "
            "role VARCHAR, hash VARCHAR UNIQUE, created_at FLOAT, revoked_at FLOAT)"
        )
        conn.execute(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ('old', 'submitter', "
            f"'{tokens._hash('tg_old')}', 1.0)"
        )
    conn.close()
    store = Store(f"sqlite:///{path}")
    try:
        assert store.tx(tokens.lookup, "tg_old") == tokens.Principal(1, "old", "submitter")
        assert [r["expires_at"] for r in store.tx(tokens.list_all)] == [None]
    finally:
        store.close()


def readme_token_command() -> list[str]:
    """The `./dev token create ...` line README gives for use beside a running demo."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### A token") : readme.index("### From Python")]
    (line,) = [ln for ln in section.splitlines() if "token create" in ln and "tabgrid-demo" in ln]
    words = line.split("#")[0].split()
    assert words[:3] == ["./dev", "token", "create"], line
    return words[1:]


def test_readme_token_command_works_beside_a_running_demo(
    tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """The demo's coordinator keeps its database in tabgrid-demo/ (cli/demo.py): README's
    command, run from the same folder, must make a token that coordinator accepts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TABGRID_DB", raising=False)
    monkeypatch.delenv("TABGRID_DATA", raising=False)
    from tabgrid.cli.demo import Coordinator

    demo = Coordinator(8000, Path("tabgrid-demo"))  # the URL and folder the demo serves from
    with LiveServer(Settings(db=demo.db, data_dir=Path("tabgrid-demo"))) as live:
        assert cli.main(readme_token_command()) == 0
        out = capsys.readouterr()
        assert "note: there was no database" not in out.err
        r = httpx.get(f"{live.url}/api/v1/jobs", headers=bearer(out.out.strip()))
        assert r.status_code == 200, r.text


def test_a_token_for_a_database_no_coordinator_has_is_warned(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "nowhere"
    assert cli.main(["token", "create", "--role", "submitter", "--data", str(folder)]) == 0
    assert capsys.readouterr().err.startswith(
        f"note: there was no database at {folder / 'tabgrid.db'}; creating it. A coordinator "
        "only accepts tokens from its own database: pass the --data (or --db) it runs with "
        "(beside ./dev demo: --data tabgrid-demo)\n"
    )


def test_the_console_shows_each_tokens_expiry() -> None:
    """web/console/tokens.js's Expires cell, run in Node as the browser runs the module."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (./dev bundle needs it too)")
    script = """
import { expiry } from './web/console/tokens.js';
import { when } from './web/console/format.js';
const later = Date.now() / 1000 + 86400;
console.log(JSON.stringify({
  never: expiry({ expires_at: null }, false),
  expired: expiry({ expires_at: 1e9 }, true),
  expiredWhen: when(1e9),
  live: expiry({ expires_at: later }, false),
  liveWhen: when(later),
}));
"""
    run = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    shown = json.loads(run.stdout)
    assert shown["never"] == "never"
    assert shown["expired"] == f"{shown['expiredWhen']} (expired)"
    assert shown["live"] == shown["liveWhen"] and "expired" not in shown["live"]

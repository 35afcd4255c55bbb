"""README's recipe for several coordinators behind nginx says what the tests run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from integration.nginx import site
from tabgrid.cli.commands import build_parser, settings_from_args

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Several coordinators behind nginx")
    return text[start : text.index("\n## ", start + 1)]


def _block(language: str) -> str:
    found = re.search(rf"```{language}\n(.*?)```", _section(), re.S)
    assert found, f"no {language} block in README's section"
    return found.group(1)


def test_the_readme_nginx_site_is_the_one_the_tests_run_behind() -> None:
    # The same text, with the README's addresses in place of the tests' loopback ports.
    assert _block("nginx") == site(["10.0.0.11:8000", "10.0.0.12:8000"], "80")


def test_the_readme_serve_command_is_one_the_cli_takes() -> None:
    lines = _block("sh").replace("\\\n", " ").splitlines()
    [command] = [line for line in lines if line.startswith("tabgrid serve")]
    args = build_parser().parse_args(shlex.split(command)[1:])
    settings = settings_from_args(args, env={})
    assert settings.blobs == "db" and settings.trust_proxy == ("10.0.0.10",)
    assert settings.db.startswith("postgresql://") and settings.host == "0.0.0.0"

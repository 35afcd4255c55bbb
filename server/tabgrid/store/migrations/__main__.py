"""``python -m tabgrid.store.migrations "MESSAGE"``: writes the next revision, from what
differs between the newest revision and store/tables.py (this package's docstring says more)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence

from alembic import command
from alembic.script import Script

from tabgrid.store import schema
from tabgrid.store.db import make_engine


def new_revision(message: str) -> Script:
    """Autogenerates against a scratch SQLite database at the newest revision."""
    number = f"{int(schema.head()) + 1:04d}"
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{scratch}/head.db")
        try:
            schema.upgrade(engine)
            with engine.begin() as conn:
                script = command.revision(
                    schema.config_for(conn), message, autogenerate=True, rev_id=number
                )
        finally:
            engine.dispose()
    assert isinstance(script, Script)
    return script


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print('usage: python -m tabgrid.store.migrations "what the revision does"', file=sys.stderr)
        return 2
    script = new_revision(argv[0].strip())
    # Revisions are written in a checkout (an editable install), where ruff is; without it the
    # file stays as alembic wrote it.
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", script.path], check=False)
    print(f"wrote {script.path}: read it (the package's docstring says what to look for)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

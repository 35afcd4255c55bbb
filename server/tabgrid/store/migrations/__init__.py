"""The schema's revisions (alembic), found through this package: there is no alembic.ini.

``env.py`` runs them on the connection store/schema.py passes; ``versions/`` holds one file a
revision, ``NNNN_what_it_does.py``, each naming the one before as ``down_revision``; ``legacy``
brings databases made before revisions were recorded up to the first one.

Adding a revision, after changing store/tables.py:

1. ``.venv/bin/python -m tabgrid.store.migrations "add jobs.deadline"`` (in a checkout) writes
   ``versions/NNNN_add_jobs_deadline.py``, numbered after the newest, with the operations that
   alembic finds between the newest revision and tables.py (it compares on SQLite).
2. Read it and fix what it cannot know: a new NOT NULL column on a table that has rows needs a
   ``server_default`` (``sa.text("0")``); SQLite alters little in place, so anything beyond
   adding a column or an index goes in ``with op.batch_alter_table(...)``, which rebuilds the
   table: give it ``table_kwargs={"sqlite_autoincrement": True}`` where tables.py has
   NEVER_REUSED, as a new such table needs ``sqlite_autoincrement=True``. Write the
   ``downgrade`` too.
3. ``tests/test_migrations.py`` upgrades empty SQLite and PostgreSQL databases, one revision
   at a time, and fails while the result differs from tables.py.

Nothing else to do: SQLite databases upgrade when opened, and a coordinator on PostgreSQL
refuses to start until ``tabgrid db upgrade --db postgresql://...`` has run.
"""

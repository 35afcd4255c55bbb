"""The revisions, oldest first by their number; alembic chains them by ``down_revision``."""

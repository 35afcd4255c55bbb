"""Who may call a route. Every row of the route table names one of these; routes.py enforces it
before the handler runs, so a handler never checks for itself and a route cannot forget to."""

from __future__ import annotations

import enum


class Role(enum.Enum):
    ANONYMOUS = "anonymous"  # anyone: health, the API's own description
    WORKER = "worker"  # a worker's id and secret, or a token of any role (blobs)
    SUBMITTER = "submitter"  # a token of any role; a submitter sees only its own jobs
    OPERATOR = "operator"  # an operator's token


# The OpenAPI security schemes each role accepts, any one of which is enough.
SCHEMES: dict[Role, tuple[str, ...]] = {
    Role.ANONYMOUS: (),
    Role.WORKER: ("bearer", "worker"),
    Role.SUBMITTER: ("bearer",),
    Role.OPERATOR: ("bearer",),
}

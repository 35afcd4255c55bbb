"""Server-rendered pages: the coordinator's job status page at /status (no JavaScript).

Anyone sees the network's figures: how many jobs in each state, how many units done. Job
names and states are shown only to a request with a token ('Authorization: Bearer ...'):
a submitter's own jobs, or every job for an operator. A page link cannot carry a token, so
a browser sees the figures; scripts and curl send the header.
"""

from __future__ import annotations

from html import escape

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tabgrid.api import auth
from tabgrid.api.io import services
from tabgrid.store import jobs
from tabgrid.store.tokens import Principal

SHOWN_JOBS = 50
STATE_ORDER = ("running", "paused", "done", "failed", "cancelled")

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tabgrid</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 56rem; margin: 2rem auto; }}
body {{ padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .25rem .75rem .25rem 0; border-bottom: 1px solid #ddd; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
code, pre {{ background: #f4f4f4; padding: .1rem .3rem; }}
</style>
</head>
<body>
<h1>tabgrid</h1>
<p>This is a tabgrid coordinator. Researchers submit batch jobs to it over HTTP; volunteers'
GPUs compute the jobs' work units and send the results back. No result is accepted until
independent workers agree on it, or a cheap exact verifier confirms it.</p>
<h2>Jobs</h2>
{jobs}
<h2>Contribute a GPU</h2>
<p>On a machine with a GPU (Vulkan, Metal or Direct3D 12), install tabgrid and start a
native worker pointed at this coordinator:</p>
<pre>pip install tabgrid
tabgrid worker --url {url}</pre>
<p>The worker computes units until you stop it with Ctrl-C. Give it
<code>--state worker.json</code> to keep its identity and credit across restarts.</p>
<p>The HTTP API is described in <a href="/openapi.json">/openapi.json</a>.</p>
</body>
</html>
"""


async def home(request: Request) -> HTMLResponse:
    # No header: a visitor. A header that is not a valid token is a 401, as on every route.
    who = await auth.principal(request) if "authorization" in request.headers else None
    figures, rows = await services(request).store.run(_jobs_seen, who)
    section = _figures(figures)
    if who is None:
        section += (
            "\n<p>Job names are shown to their owners: send "
            "<code>Authorization: Bearer &lt;token&gt;</code> with the request.</p>"
        )
    else:
        whose = "All jobs" if who.is_operator else f"Jobs of {escape(who.name or 'this token')}"
        section += f"\n<h3>{whose}</h3>\n{_jobs_table(rows)}"
    url = str(request.base_url).rstrip("/")
    # What a token sees must not be kept by a cache, nor served to a visitor without one.
    cache = "private, no-store" if who is not None else "no-cache"
    headers = {"Cache-Control": cache, "Vary": "Authorization"}
    return HTMLResponse(_PAGE.format(jobs=section, url=escape(url)), headers=headers)


def _jobs_seen(conn: Connection, who: Principal | None) -> tuple[list[tuple], list[dict]]:
    figures = jobs.figures_by_state(conn)
    if who is None:
        return figures, []
    owner = None if who.is_operator else who.id
    return figures, jobs.list_jobs(conn, owner, None, SHOWN_JOBS)


def _figures(figures: list[tuple]) -> str:
    """Counts only: nothing here names a job or its owner."""
    if not figures:
        return "<p>No jobs yet.</p>"
    by_state = {state: (n, units or 0, done or 0) for state, n, units, done in figures}
    states = sorted(by_state, key=lambda s: (STATE_ORDER + (s,)).index(s))
    n_jobs = sum(n for n, _, _ in by_state.values())
    units = sum(u for _, u, _ in by_state.values())
    done = sum(d for _, _, d in by_state.values())
    counts = ", ".join(f"{by_state[s][0]} {escape(s)}" for s in states)
    return (
        f'<p id="figures">{n_jobs} job{"s" if n_jobs != 1 else ""} ({counts}); '
        f"{done} of {units} units done.</p>"
    )


def _jobs_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>No jobs.</p>"
    body = "\n".join(_job_row(row) for row in rows)
    head = "<tr><th>job</th><th>name</th><th>kernel</th><th>state</th><th>done</th></tr>"
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _job_row(job: dict) -> str:
    done, total = job["done_units"], job["n_units"]
    percent = f" ({100 * done / total:.0f}%)" if total else ""
    cells = (
        f'<td class="n">{job["id"]}</td>',
        f"<td>{escape(job['name'] or '-')}</td>",
        f"<td>{escape(job['kernel'])}</td>",
        f"<td>{escape(job['state'])}</td>",
        f'<td class="n">{done}/{total}{percent}</td>',
    )
    return f"<tr>{''.join(cells)}</tr>"


def routes() -> list[Route]:
    return [Route("/status", home, methods=["GET"])]

"""Server-rendered pages: the coordinator's job status page at /status (no JavaScript)."""

from __future__ import annotations

from html import escape

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tabgrid.httpio import services
from tabgrid.store import jobs

SHOWN_JOBS = 50

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
    rows = await services(request).store.run(_recent_jobs)
    url = str(request.base_url).rstrip("/")
    return HTMLResponse(_PAGE.format(jobs=_jobs_table(rows), url=escape(url)))


def _recent_jobs(conn: Connection) -> list[dict]:
    return jobs.list_jobs(conn, None, None, SHOWN_JOBS)


def _jobs_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>No jobs yet.</p>"
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

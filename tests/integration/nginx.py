"""nginx in front of several coordinators, for tests. ``site`` is the configuration README's
deployment recipe gives (tests/test_deployment_docs.py holds them equal); ``Nginx`` wraps it in
a main configuration of its own (prefix, pid, temporary files and logs under a test's folder)
and runs nginx as a child process until stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from integration.harness import free_port
from tabgrid.settings import Limits, MiB

# The part README shows: inside Debian's http {} (/etc/nginx/sites-available/tabgrid).
SITE = """\
upstream tabgrid {
@SERVERS@
    keepalive 32;
}

server {
    listen @LISTEN@;
    client_max_body_size @BODY@;  # the coordinator's max_body: one job submission
    proxy_http_version 1.1;
    # Passive health checks: a coordinator that refuses connections, times out or answers
    # 502/503 (its database is gone) counts as failed; an idempotent request goes to the next.
    proxy_next_upstream error timeout http_502 http_503;
    proxy_connect_timeout 2s;

    location /api/v1/worker {
        proxy_pass http://tabgrid;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
        # The client as nginx saw it, replacing whatever the client claimed.
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 1h;  # workers hold their websocket for as long as they compute
        proxy_send_timeout 1h;
    }

    location /api/v1/blobs/ {
        proxy_pass http://tabgrid;
        client_max_body_size @BLOB@;  # the coordinator's max_blob
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_request_buffering off;  # uploads stream through; the coordinator bounds them
        proxy_read_timeout 5m;
    }

    location / {
        proxy_pass http://tabgrid;
        proxy_set_header Connection "";  # keep-alive to the coordinators
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_request_buffering off;  # uploads stream through; the coordinator bounds them
        proxy_read_timeout 5m;
    }
}
"""

MAIN = """\
daemon off;
worker_processes 1;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log notice;
@USER@
events {
    worker_connections 1024;
}

http {
    log_format upstreams '$remote_addr "$request" $status upstream=$upstream_addr';
    access_log @PREFIX@/access.log upstreams;
    client_body_temp_path @PREFIX@/client_body;
    proxy_temp_path @PREFIX@/proxy;
    fastcgi_temp_path @PREFIX@/fastcgi;
    uwsgi_temp_path @PREFIX@/uwsgi;
    scgi_temp_path @PREFIX@/scgi;
@BIND@
@SITE@
}
"""


def site(upstreams: Sequence[str], listen: str, limits: Limits | None = None) -> str:
    """The site configuration for coordinators at ``upstreams`` (host:port each), with
    passive health checks: a coordinator that fails 3 times is left alone for 10 s."""
    limits = limits or Limits()
    servers = "\n".join(f"    server {u} max_fails=3 fail_timeout=10s;" for u in upstreams)
    return (
        SITE.replace("@SERVERS@", servers)
        .replace("@LISTEN@", listen)
        .replace("@BODY@", _size(limits.max_body))
        .replace("@BLOB@", _size(limits.max_blob))
    )


def _size(n: int) -> str:
    return f"{n // MiB}m" if n % MiB == 0 else str(n)


def binary() -> str:
    """nginx's path; under CI a missing nginx is a failure (./dev test installs it)."""
    # Debian puts it in /usr/sbin, which is not on every PATH.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("nginx is not installed (./dev test installs Debian's nginx)")
    pytest.skip("nginx is not installed (Debian: apt-get install nginx)")


class Nginx:
    """nginx on 127.0.0.1 in front of the coordinators on ``ports``. ``bind``: the address it
    connects to them from, so a test can tell the proxy's address from its clients'."""

    def __init__(self, prefix: Path, ports: Sequence[int], bind: str | None = None) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix.mkdir(parents=True, exist_ok=True)
        upstreams = [f"127.0.0.1:{p}" for p in ports]
        conf = (
            MAIN.replace("@PREFIX@", str(prefix))
            # As root, nginx's workers would run as nobody, who cannot enter a test's folder.
            .replace("@USER@", "user root;\n" if os.geteuid() == 0 else "")
            .replace("@BIND@", f"    proxy_bind {bind};" if bind else "")
            .replace("@SITE@", _indent(site(upstreams, f"127.0.0.1:{self.port}")))
        )
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(conf)
        self.log = prefix / "error.log"
        self.access_log = prefix / "access.log"  # with the coordinator each request went to
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> Nginx:
        nginx = binary()
        args = [nginx, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.log)]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its configuration:\n{check.stderr}")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"nginx did not answer: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open websockets are closed
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.splitlines())

"""The baseline for bench/dispatch.py: a bare websocket echo on the coordinator's own stack
(Starlette on uvicorn), and clients that keep a window of messages in flight like a worker does.

    python bench/echo.py serve PORT
    python bench/echo.py client URL SECONDS WINDOW   -> prints round trips completed
"""

from __future__ import annotations

import asyncio
import sys
import time


def serve(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute

    async def echo(ws):  # type: ignore[no-untyped-def]
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except Exception:
            return

    async def health(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("ok")

    app = Starlette(routes=[WebSocketRoute("/echo", echo), Route("/healthz", health)])
    # The coordinator's own websocket settings, so the baseline differs only by doing nothing.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False)


async def client(url: str, seconds: float, window: int) -> int:
    import websockets

    payload = '{"type":"ready","n":1}'
    done = 0
    async with websockets.connect(url) as ws:
        for _ in range(window):
            await ws.send(payload)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await ws.recv()
            done += 1
            await ws.send(payload)
    return done


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        print(asyncio.run(client(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))))

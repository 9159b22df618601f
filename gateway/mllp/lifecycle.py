"""Run an MLLP listener as a process: until SIGTERM or SIGINT, then stop gracefully.

A service manager (systemd, Kubernetes) stops a process with SIGTERM and kills it a while
later; in that time the messages being handled finish and their ACKs go out, so no sender is
left with a message stored but not acknowledged (it would resend it; the mapping makes that
harmless, but a clean stop sends fewer repeats).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from gateway.mllp.server import MllpServer

log = logging.getLogger("gateway.mllp")


async def run_until_signalled(server: MllpServer,
                              signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Start ``server`` (if it is not), serve until one of ``signals`` arrives or the server is
    stopped otherwise, stop gracefully. The signal handlers are removed on the way out."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    installed = []
    try:
        for sig in signals:  # before listening: a signal from then on stops us gracefully
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        serving = asyncio.create_task(server.serve_forever())
        try:
            either: set[asyncio.Future[Any]] = {serving, received}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if received.done():
                log.info("MLLP: %s received, stopping", received.result().name)
            await server.stop()
            await serving
        finally:
            serving.cancel()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)

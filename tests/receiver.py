"""A stand-in for the municipal systems that receive notifications: the gateway posts to it
instead of the network. Each endpoint can be up, down (connection refused) or
answer an error status, and can be switched while the test runs."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field



@dataclass
class Received:
    endpoint: str
    headers: dict
    body: bytes
    bundle: dict = field(default_factory=dict)

    @property
    def status(self) -> dict:
        """The notification's status Parameters as {name: value} (notification-event parts as a list)."""
        out: dict = {"notification-event": []}
        for p in self.bundle["entry"][0]["resource"]["parameter"]:
            if p["name"] == "notification-event":
                out["notification-event"].append({q["name"]: _value(q) for q in p["part"]})
            else:
                out[p["name"]] = _value(p)
        return out

    @property
    def kind(self) -> str:
        return self.status["type"]

    @property
    def numbers(self) -> list[int]:
        return [int(e["event-number"]) for e in self.status["notification-event"]]


def _value(p: dict):
    return next(v for k, v in p.items() if k.startswith("value"))


class Receiver:
    """The gateway's notification sender in tests (``Delivery``'s Sender protocol)."""

    def __init__(self):
        self.received: list[Received] = []
        self.answer: dict[str, int | str] = {}  # endpoint → HTTP status, or "down"
        self.attempts: dict[str, int] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.attempts[url] = self.attempts.get(url, 0) + 1
        answer = self.answer.get(url, 200)
        if answer == "down":
            raise ConnectionRefusedError("connection refused")
        if answer == 200:
            self.received.append(Received(url, {k.lower(): v for k, v in headers.items()}, body, json.loads(body)))
        return int(answer)

    async def close(self) -> None:
        pass

    def at(self, endpoint: str, kind: str | None = None) -> list[Received]:
        return [r for r in self.received if r.endpoint == endpoint and (kind is None or r.kind == kind)]

    def numbers(self, endpoint: str) -> list[int]:
        """Event numbers in the order they arrived at ``endpoint`` (duplicates kept)."""
        return [n for r in self.at(endpoint, "event-notification") for n in r.numbers]

    async def wait(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received: {[(r.endpoint, r.kind, r.numbers) for r in self.received]}")
            await asyncio.sleep(0.01)

"""The network sender of notifications: aiohttp, connecting only to addresses the endpoint rule
(``endpoints.py``) allows, checked at connect time.

- A host name is resolved by ``CheckedResolver``, which wraps aiohttp's default resolver and
  drops every address the rule refuses before aiohttp sees it: the connection is made to an
  address that was checked, never to one from a second lookup (so DNS rebinding does not pass).
  aiohttp's DNS cache holds what the resolver returned, so it holds checked addresses only.
- A host written as an address is connected to without a lookup (aiohttp skips the resolver for
  those): it is checked here before the request. The host checked is the one aiohttp connects
  to (yarl's, after IDNA: full-width digits become ASCII ones).
- One keep-alive pool for all endpoints. aiohttp keys pooled connections by (host, port, TLS):
  a connection opened for a host that may reach an address is never reused for another host
  that resolves to the same address but may not.
- No proxy from the environment (``trust_env`` off) and no redirects: either would connect on
  our behalf to an address nobody checked.
"""
from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from gateway.events.endpoints import EndpointPolicy, EndpointRefused, literal_address, looks_like_address


class CheckedResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's default resolver if None) and keeps only the addresses
    the policy allows for the host; none left raises ``EndpointRefused`` (an OSError, which
    aiohttp reports as ``ClientConnectorDNSError`` with it as ``os_error``)."""

    def __init__(self, policy: EndpointPolicy, inner: AbstractResolver | None = None):
        self.policy = policy
        self._inner = inner
        self._owned = inner is None

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._inner is None:  # created here: the default resolver binds to the running loop
            self._inner = DefaultResolver()
        answers = await self._inner.resolve(host, port, family)
        kept, refused = [], []
        for answer in answers:
            why = self.policy.refusal(host, answer["host"])
            if why is None:
                kept.append(answer)
            else:
                refused.append((answer["host"], why))
        if not kept:
            raise EndpointRefused(host, refused)
        return kept

    async def close(self) -> None:
        if self._inner is not None and self._owned:
            await self._inner.close()
            self._inner = None


class HttpSender:
    """POSTs notifications (``delivery.Sender``). ``resolver``: the inner resolver (tests stand
    in one that answers what they need; None: the system's)."""

    def __init__(self, policy: EndpointPolicy | None = None, resolver: AbstractResolver | None = None):
        self.policy = policy or EndpointPolicy()
        self._resolver = CheckedResolver(self.policy, resolver)
        self._session: aiohttp.ClientSession | None = None

    def check_literal(self, url: URL) -> None:
        """A host aiohttp connects to without the resolver, checked as the resolver would."""
        host = url.raw_host or ""
        if not looks_like_address(host) and literal_address(host) is None:
            return  # a name: the resolver checks each address
        why = self.policy.refusal(host, literal_address(host) or host)
        if why is not None:
            raise EndpointRefused(host, [(host, why)])

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        target = URL(url)
        self.check_literal(target)
        if self._session is None:  # created on first use, inside the event loop
            connector = aiohttp.TCPConnector(resolver=self._resolver)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)
        try:
            async with self._session.post(target, data=body, headers=headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await response.read()  # the connection goes back to the pool
                return response.status
        except aiohttp.ClientConnectorError as exc:  # (ClientConnectorDNSError since aiohttp 3.11)
            if isinstance(exc.os_error, EndpointRefused):
                raise exc.os_error from None
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._resolver.close()

"""Where notifications may go: the one rule for Subscription endpoint addresses.

Why: the gateway POSTs to whatever URL a subscriber names, from inside the care network. Left
open, a subscriber could aim it at the gateway's own machine, the region's internal systems or a
cloud metadata service, and read from ``Subscription.error`` which ports answer (SSRF). So by
default an endpoint must be reached at a *public* address. The rule is applied twice:

- at Subscription write time to hosts written as addresses (``subscriptions.py``: 422), and
- at connect time to every address a connection is made to (``sender.py``: the resolver drops
  addresses the rule refuses, so a host name that resolves to a public address when the
  Subscription is written and to a private one later — DNS rebinding — does not pass).

What is not public (``non_public``): loopback, private (10/8, 172.16/12, 192.168/16), link-local
(169.254/16, fe80::/10), unspecified (0/8, ::), shared CGNAT (100.64/10), unique-local (fc00::/7),
site-local (fec0::/10), multicast, broadcast, documentation, benchmarking and other reserved
ranges. An IPv6 address that carries an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
-compatible ``::a.b.c.d``, -translated, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) is judged by
that IPv4 address. The table is explicit rather than ``ipaddress``'s ``is_global`` alone: that
property calls multicast, 6to4, NAT64 and IPv4-compatible addresses global, and its ranges have
changed between Python patch releases. ``is_global`` is still asked, last, as a safety net.

Hosts written as addresses must be canonical (``a.b.c.d``, or IPv6 in brackets): the resolver
also reads ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1`` and ``127.0.0.1.`` as 127.0.0.1,
so such spellings are refused outright.

The operator opens hosts by name (``GATEWAY_NOTIFY_ALLOWED_HOSTS``): a care network's internal
receivers live at private addresses. Once the list is set only hosts on it may be named; a host
on it may be reached at any address except those that are never a receiver — unspecified,
multicast, broadcast and link-local (where cloud metadata services live). The development setting
``GATEWAY_NOTIFY_HTTP_LOOPBACK=on`` opens loopback addresses (and only those) to every host.
"""
from __future__ import annotations

import ipaddress
import re
import socket

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never a notification receiver, whoever names it.
NEVER = frozenset({"unspecified", "multicast", "broadcast", "link-local", "invalid"})
NOT_LISTED = "not on the operator's list"

_V4 = [(ipaddress.IPv4Network(net), kind) for net, kind in (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"), ("192.0.2.0/24", "documentation"), ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"), ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"))]
_V6 = [(ipaddress.IPv6Network(net), kind) for net, kind in (
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("64:ff9b:1::/48", "private"), ("::/8", "reserved"),
    ("100::/64", "reserved"), ("2001::/23", "reserved"), ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"), ("5f00::/16", "reserved"), ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"), ("fec0::/10", "site-local"), ("ff00::/8", "multicast"))]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# What the C resolver (inet_aton) reads as an IPv4 address: 1 to 4 parts, decimal, octal or hex.
_NUMERIC = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.*")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    value = int(ip)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (:: and ::1 are themselves)
        return ipaddress.IPv4Address(value)
    if value >> 32 == 0xFFFF0000 or ip in _NAT64:  # IPv4-translated ::ffff:0:a.b.c.d; NAT64
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return ip.sixtofour


def non_public(address: IPAddress | str) -> str | None:
    """The kind of non-public range ``address`` is in ('loopback', 'private', …), None if public.
    An address that cannot be parsed is 'invalid' (refused: fail closed)."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "invalid"
    if ip.version == 6:
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return non_public(embedded)
    for net, kind in _V6 if ip.version == 6 else _V4:
        if ip in net:
            return kind
    return None if ip.is_global else "reserved"


def host_key(host: str) -> str:
    """A host as matched against names: lower case, without the trailing dot of a rooted name."""
    return host.lower().rstrip(".")


def _listed(entry: str) -> str:
    """An allow-list entry as hosts are matched against it: in the form aiohttp connects to
    (IDNA, ``kommun-åre.se`` → ``xn--kommun-re-c3a.se``), with its ``*.`` kept."""
    wildcard, name = ("*.", entry[2:]) if entry.startswith("*.") else ("", entry)
    try:
        name = URL.build(scheme="https", host=name).raw_host or name
    except ValueError:
        pass
    return wildcard + host_key(name)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host names if it is written as one (IPv6 without its brackets; an
    IPv6 zone, ``%eth0`` or ``%25eth0``, is kept), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def odd_spelling(host: str) -> str | None:
    """For a host the resolver would read as an IPv4 address although it is not written as one
    (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``127.0.0.1.``): the address it
    means ('no address' if none). None for names and canonical addresses."""
    host = host.lower()
    if not host.isascii() or literal_address(host) is not None or not (_NUMERIC.fullmatch(host) or looks_like_address(host)):
        return None
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(host.rstrip("."))))
    except OSError:
        return "no address"


def looks_like_address(host: str) -> bool:
    """aiohttp's test for a host it connects to without asking the resolver (its
    ``helpers.is_ip_address``): those are checked before the request instead."""
    return ":" in host or host.replace(".", "").isdigit()


class EndpointPolicy:
    """The rule above with the operator's settings: ``allowed_hosts`` a comma-separated list
    (``kommun.se,*.sjunet.org``; ``*.`` any subdomain; '' every public host), ``http_loopback``
    the development setting."""

    def __init__(self, allowed_hosts: str = "", http_loopback: bool = False):
        self.allowed_hosts = tuple(_listed(h.strip()) for h in allowed_hosts.split(",") if h.strip())
        self.http_loopback = http_loopback

    def named(self, host: str) -> bool:
        """May a Subscription name this host at all: every host, or once the operator lists
        hosts, those on the list."""
        return not self.allowed_hosts or self.opened(host)

    def opened(self, host: str) -> bool:
        """Is the host on the operator's list (and so may be reached at private addresses)."""
        host = host_key(host)
        return any(host == h or h.startswith("*.") and host.endswith(h[1:]) for h in self.allowed_hosts)

    def refusal(self, host: str, address: IPAddress | str) -> str | None:
        """Why ``host`` may not be reached at ``address`` (the kind of range, or that the host is
        not on the operator's list); None if it may."""
        if not self.named(host):
            return NOT_LISTED
        kind = non_public(address)
        if kind is None or kind not in NEVER and self.opened(host) or kind == "loopback" and self.http_loopback:
            return None
        return kind

    def is_loopback_host(self, host: str) -> bool:
        """A host that names this machine: a loopback address, or ``localhost`` (RFC 6761: it and
        its subdomains always resolve to loopback)."""
        key = host_key(host)
        address = literal_address(host)
        return key == "localhost" or key.endswith(".localhost") or (
            address is not None and non_public(address) == "loopback")


class EndpointRefused(OSError):
    """No address of the endpoint's host may be connected to (raised at connect time). Carries
    the detail for the operator's log; the subscriber is told only a category."""

    def __init__(self, host: str, refused: list[tuple[str, str]]):
        self.host = host
        self.refused = refused  # (address, why)
        detail = ", ".join(f"{a} ({why})" for a, why in refused) or "no address"
        super().__init__(f"{host}: {detail}")

"""Which address of this machine a worker on another machine reaches it on.

A CommTask's hub listens on TCP at that address when its executor's workers
may be elsewhere: a dask cluster whose scheduler listens on a network address
(`tcp_host_for`), Ray nodes off this machine (`RayExecutor.comm_host`).
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["tcp_host_for", "local_addresses"]


def tcp_host_for(scheduler_address: str) -> str | None:
    """The address of this machine a hub listens on for the workers of a dask scheduler at `scheduler_address`.

    `scheduler_address` is where the dask scheduler says it listens (e.g.
    "tcp://10.1.2.3:8786"). Its workers reach that address, so: when it is an
    address of this machine (the scheduler runs here, as with dask-jobqueue),
    that address; when the scheduler runs elsewhere, the address of this
    machine on the route to it. Never a wildcard (0.0.0.0). None when the
    workers are on this machine for sure (the scheduler listens on loopback or
    in-process): the Unix socket reaches them, and a loopback TCP port would be
    open to every user of the machine.

    Raises:
        OSError: the scheduler's host name does not resolve, or no route leads to it.
    """
    scheme, _, location = scheduler_address.rpartition("://")
    if scheme == "inproc":
        return None
    host, _, port = location.rpartition(":")
    if not host:  # no port in it
        host, port = location, "0"
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        raise OSError(f"the dask scheduler's address {scheduler_address!r} names no host to listen on")
    family, _, _, _, sockaddr = socket.getaddrinfo(host, int(port or 0), type=socket.SOCK_STREAM)[0]
    ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
    if ip.is_loopback:
        return None
    if str(ip) not in local_addresses():
        with socket.socket(family, socket.SOCK_DGRAM) as probe:  # sends nothing: asks the routing table
            probe.connect(sockaddr)
            ip = ipaddress.ip_address(str(probe.getsockname()[0]).split("%")[0])
        if ip.is_loopback:
            return None
    return str(ip)


def local_addresses() -> set[str]:
    """The addresses of this machine's network interfaces (scope ids dropped)."""
    import psutil

    return {a.address.split("%")[0] for addresses in psutil.net_if_addrs().values() for a in addresses}

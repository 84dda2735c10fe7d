"""The address a batch-job worker should listen on, printed by the job script on the compute node.

Dask workers started without ``--host`` listen on every interface of their node (``0.0.0.0``), and
their diagnostics server does so even with ``--interface``. The SLURM / PBS job scripts tomoflow
builds (:func:`tomoflow.cluster.start._restrict_worker_listeners`) run this module first::

    python -m tomoflow.cluster._node route 10.1.2.3     # the local address that reaches 10.1.2.3
    python -m tomoflow.cluster._node interface ib0      # the IPv4 address of interface ib0

and hand the printed address to ``dask worker --host ... --dashboard-address ...:0``, so every
listener of the worker is bound to the one address through which it talks to the scheduler anyway.
Only the standard library (and ``psutil``, a dependency of distributed, for interface names) is
used: it runs in well under a second.
"""

from __future__ import annotations

import socket
import sys

__all__ = ["interface_address", "route_address", "main"]


def route_address(host: str, port: int = 80) -> str:
    """The local IP address through which ``host`` is reached (no packet is sent).

    Parameters
    ----------
    host
        A host name or IP address (the scheduler's).
    port
        Any port; only the route matters.

    Returns
    -------
    str

    Raises
    ------
    OSError
        ``host`` does not resolve or no route leads to it.
    """
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(sockaddr)
        return str(sock.getsockname()[0])


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface, as ``dask worker --interface`` would pick it.

    Raises
    ------
    ValueError
        No such interface, or it has no IPv4 address.
    """
    import psutil

    addresses = psutil.net_if_addrs()
    if name not in addresses:
        raise ValueError(f"no network interface {name!r} on this node (it has: {', '.join(sorted(addresses))})")
    for info in addresses[name]:
        if info.family == socket.AF_INET:
            return str(info.address)
    raise ValueError(f"network interface {name!r} has no IPv4 address")


def main(argv: list[str] | None = None) -> int:
    """``route HOST`` or ``interface NAME``: print the address; exit 1 with a one-line message if none."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("route", "interface"):
        sys.stderr.write("usage: python -m tomoflow.cluster._node (route HOST | interface NAME)\n")
        return 2
    mode, target = args
    try:
        address = route_address(target) if mode == "route" else interface_address(target)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"tomoflow: cannot find this node's address ({mode} {target}): {exc}\n")
        return 1
    sys.stdout.write(address + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Small helpers shared by the test modules."""

from __future__ import annotations


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than 127.x (found without sending anything)."""
    import socket

    found = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(info[4][0])
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect: picks a route, sends nothing
            found.add(s.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not a.startswith("127."))


def refuses_connection(host: str, port: int) -> bool:
    """True if nothing accepts a TCP connection at host:port."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True

"""The pre-ping's socket poll: a quiet socket is lent without a round trip; a readable, closed
or missing one is pinged first."""

from __future__ import annotations

import socket

from scalekit.pool.liveness import is_quiet


class _FakeConnection:
    """What the pre-ping reads of a psycopg2 connection: fileno() and closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = 0

    def fileno(self) -> int:
        return self.sock.fileno()


def test_a_quiet_socket_is_quiet_and_a_readable_or_closed_one_is_not() -> None:
    ours, server = socket.socketpair()
    connection, info = _FakeConnection(ours), {}
    try:
        assert is_quiet(connection, info)
        assert is_quiet(connection, info)  # the cached poll object
        server.send(b"E")  # an error message from a restarting server
        assert not is_quiet(connection, info)
        ours.recv(1)
        assert is_quiet(connection, info)
        server.close()  # end of file
        assert not is_quiet(connection, info)
        connection.closed = 1
        assert not is_quiet(connection, info)
    finally:
        ours.close()


def test_the_poll_follows_a_new_descriptor() -> None:
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    connection, info = _FakeConnection(first), {}
    try:
        assert is_quiet(connection, info)
        second_peer.close()  # the new socket is at end of file
        connection.sock = second
        assert not is_quiet(connection, info)
    finally:
        for sock in (first, first_peer, second):
            sock.close()


def test_no_socket_means_not_quiet() -> None:
    class NoSocket:
        pass

    class Broken:
        closed = 0

        def fileno(self) -> int:
            return -1

    assert not is_quiet(NoSocket(), {})
    assert not is_quiet(Broken(), {})

"""pibench's channel between parties (`pibench.measuring.peers`), against honest and hostile peers, in-process on
loopback: authentication both ways, nothing unpickled, bounded frames, silence noticed and named."""

from __future__ import annotations

import pickle
import socket
import struct
import threading
import time

import pytest

from pibench.measuring.peers import MAX_FRAME, MAX_GREETING, PROTOCOL, PeerError, Peers, _mac, compare_runs
from pibench.util.procs import listening_socket

SECRET = b"0123456789abcdef0123456789abcdef"
ROLES = {0: "server", 1: "client"}
RUN = {"backend": "crypten", "suite": "abc", "full": False, "repeats": 3}


class Marker:
    """A pickle that would create a file if anyone unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _serve(listener, **kw):
    """Rank 0 in a thread; its outcome (a Peers or the exception) in the returned list."""
    out: list = []

    def run():
        try:
            out.append(Peers.serve(listener, ROLES, SECRET, kw.get("run", RUN), 10.0, kw.get("join_s", 10.0))[0])
        except Exception as err:
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _refused_by_server(payload: bytes, tmp_path) -> str:
    listener = listening_socket("127.0.0.1", 0)
    thread, out = _serve(listener)
    with socket.create_connection(listener.getsockname(), timeout=5) as sock:
        sock.sendall(payload)
        thread.join(10)
    listener.close()
    (err,) = out
    assert isinstance(err, PeerError), err
    assert "\n" not in str(err)
    return str(err)


def test_a_pickle_is_never_unpickled_by_rank_0(tmp_path):
    """The reproduction of issue 19: a fake rank 1 sends a pickle whose __reduce__ runs code. Raw, and
    framed like a greeting: refused, naming the peer, and no code ran."""
    marker = tmp_path / "pwned"
    bomb = pickle.dumps(Marker(marker))
    for payload in (bomb, _frame(bomb)):
        message = _refused_by_server(payload, tmp_path)
        assert message.startswith("party 0 (server): ") and "a peer at 127.0.0.1:" in message
        assert not marker.exists()


@pytest.mark.parametrize(
    "payload, says",
    [
        (_frame(b"\xff" * 10), "not a pibench greeting"),
        (struct.pack(">I", MAX_GREETING + 1), f"greeting; a pibench greeting is under {MAX_GREETING} bytes"),
        (struct.pack(">I", 2**31), "greeting; a pibench greeting is under"),
        (_frame(b'{"protocol": "other/1", "rank": 1, "nonce": "00"}'), f"it does not speak {PROTOCOL}"),
        (_frame(b'{"protocol": "%s", "rank": 0, "nonce": "00"}' % PROTOCOL.encode()), "claims rank 0"),
        (_frame(b'{"protocol": "%s", "rank": 1, "nonce": "zz"}' % PROTOCOL.encode()), "malformed greeting (nonce)"),
        (_frame(b"[1, 2]"), "not a pibench greeting"),
    ],
)
def test_garbage_and_oversized_greetings_are_refused(tmp_path, payload, says):
    assert says in _refused_by_server(payload, tmp_path)


def _client(address, secret, run=RUN):
    out: list = []

    def run_():
        try:
            out.append(Peers.join(1, address, ROLES, secret, run, 10.0, 10.0)[0])
        except Exception as err:
            out.append(err)

    thread = threading.Thread(target=run_, daemon=True)
    thread.start()
    return thread, out


def test_a_peer_without_the_secret_is_refused_both_ways():
    listener = listening_socket("127.0.0.1", 0)
    server, s_out = _serve(listener)
    client, c_out = _client(listener.getsockname(), b"another secret of enough bytes")
    server.join(10), client.join(10)
    assert str(s_out[0]).endswith("it does not hold this run's shared secret")
    assert "refused this party: it holds another shared secret" in str(c_out[0])
    listener.close()


def test_a_fake_rank_0_is_refused_by_the_joining_rank():
    """A fake rank 0 answers with a nonce but cannot prove the secret: rank 1 believes nothing it says."""
    listener = listening_socket("127.0.0.1", 0)
    client, out = _client(listener.getsockname(), SECRET)
    sock, _ = listener.accept()
    hello = sock.recv(4096)
    assert b'"rank": 1' in hello
    sock.sendall(_frame(b'{"protocol": "%s", "nonce": "%s"}' % (PROTOCOL.encode(), b"ab" * 32)))
    sock.recv(4096)  # its proof
    sock.sendall(_frame(b'{"proof": "%s", "describe": {}}' % (b"00" * 32)))
    client.join(10)
    assert str(out[0]).startswith("party 1: refused party 0 (server) at 127.0.0.1:")
    assert str(out[0]).endswith("it does not hold this run's shared secret")
    sock.close(), listener.close()


def test_runs_that_differ_are_named():
    listener = listening_socket("127.0.0.1", 0)
    server, s_out = _serve(listener)
    client, c_out = _client(listener.getsockname(), SECRET, RUN | {"full": True})
    server.join(10), client.join(10)
    assert str(s_out[0]) == (
        "party 0 (server): party 1 (client) runs something else: full true there, false here; "
        "give every host the same suite and options"
    )
    assert "party 0 (server) runs something else: full false there, true here" in str(c_out[0])
    with pytest.raises(PeerError, match='backend "spu" there, "crypten" here'):
        compare_runs(RUN, RUN | {"backend": "spu"}, "party 0 (server)", "party 1 (client)")
    listener.close()


def _pair(stops):
    """An honest pair joined on loopback; a stopped peer is recorded in `stops` instead of exiting."""
    listener = listening_socket("127.0.0.1", 0)
    result: dict = {}

    def serve():
        result[0] = Peers.serve(listener, ROLES, SECRET, RUN, 2.0, 10.0, on_stop=stops.append)[0]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    result[1] = Peers.join(1, listener.getsockname(), ROLES, SECRET, RUN, 2.0, 10.0, on_stop=stops.append)[0]
    thread.join(10)
    listener.close()
    return result[0], result[1]


def test_an_honest_pair_exchanges_plain_data_and_says_goodbye():
    stops: list = []
    server, client = _pair(stops)
    results: dict = {}
    thread = threading.Thread(target=lambda: results.update(s=server.exchange({"bytes": 1, "x": [1.5]})))
    thread.start()
    results["c"] = client.exchange({"bytes": 2, "x": None})
    thread.join(10)
    assert results["s"] == results["c"] == [{"bytes": 1, "x": [1.5]}, {"bytes": 2, "x": None}]
    client.close()
    time.sleep(0.3)
    server.close()
    assert stops == []  # a goodbye is not a peer gone


def test_a_silent_peer_is_named_with_what_it_was_doing():
    """Rank 1 freezes (its heartbeats stop): rank 0 says so within its 2 s timeout, naming rank 1 and
    what rank 1 last said it was doing."""
    stops: list = []
    server, client = _pair(stops)
    client.doing = "measuring layer 3"
    time.sleep(1.2)  # a heartbeat carries it
    client._closing.set()  # no more heartbeats: as frozen as a SIGSTOP makes it, to rank 0
    start = time.monotonic()
    while not stops and time.monotonic() - start < 10:
        time.sleep(0.1)
    assert 1.0 < time.monotonic() - start < 4.0
    assert stops[0].startswith("party 1 (client) stopped: nothing from it for 2 s while it was measuring layer 3")
    client.close(), server.close()


def test_an_authenticated_peer_cannot_inject_a_pickle_or_an_untagged_frame():
    """Past the handshake every frame carries the session's tag: a frame without it (injected, or a
    pickle) is refused; a tagged frame that is not JSON is refused too. Nothing is unpickled."""
    stops: list = []
    _, client = _pair(stops)
    peer = client.peers[0]
    with peer.lock:
        peer.sock.sendall(_frame(pickle.dumps({"evil": 1})) + b"\0" * 32)
    start = time.monotonic()
    while not stops and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert stops == ["party 1 (client) sent a message that does not carry the session's tag (tampered?)"]
    stops = []  # a new pair: what the first one's ends say as they are dropped is not this one's
    _, client = _pair(stops)
    peer = client.peers[0]
    data = pickle.dumps({"evil": 1})
    with peer.lock:
        peer.sock.sendall(_frame(data) + _mac(peer.key, b"%d" % peer.sent, data))
        peer.sent += 1
    start = time.monotonic()
    while not stops and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert stops == ["party 1 (client) sent a message that is not JSON"]
    with pytest.raises(PeerError, match="over the channel's"):
        client._send(peer, "x" * (MAX_FRAME + 1))


def _drip(sock: socket.socket, data: bytes, stop: threading.Event, every_s: float = 0.2) -> None:
    """Send `data` one byte at a time, every `every_s`, until it is sent or `stop` is set."""
    for i in range(len(data)):
        if stop.wait(every_s):
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return


def test_a_peer_dripping_its_greeting_ends_rank_0_by_the_join_deadline():
    """Issue 32's reproduction, in-process: a fake rank 1 sends its greeting a byte at a time (each read
    came within the per-read socket timeout, so rank 0 once waited for hours). Rank 0 ends at its join
    deadline (3 s here), naming the peer, not at the greeting's last byte (60 bytes at 0.2 s: 12 s)."""
    listener = listening_socket("127.0.0.1", 0)
    start = time.monotonic()
    thread, out = _serve(listener, join_s=3.0)
    stop = threading.Event()
    with socket.create_connection(listener.getsockname(), timeout=5) as sock:
        greeting = _frame(b'{"protocol": "%s", "rank": 1, "nonce": "%s"}' % (PROTOCOL.encode(), b"ab" * 32))
        dripper = threading.Thread(target=_drip, args=(sock, greeting, stop), daemon=True)
        dripper.start()
        thread.join(10)
        stop.set()
    listener.close()
    took = time.monotonic() - start
    (err,) = out
    assert isinstance(err, PeerError) and 2.5 < took < 5.0, (err, took)
    assert str(err).startswith("party 0 (server): refused a peer at 127.0.0.1:")
    assert "did not finish its part of joining in time" in str(err)


def test_a_fake_rank_0_dripping_its_answer_ends_the_joining_rank_by_its_deadline():
    listener = listening_socket("127.0.0.1", 0)
    start = time.monotonic()
    out: list = []

    def join():
        try:
            Peers.join(1, listener.getsockname(), ROLES, SECRET, RUN, 10.0, 3.0)
        except Exception as err:
            out.append(err)

    thread = threading.Thread(target=join, daemon=True)
    thread.start()
    sock, _ = listener.accept()
    stop = threading.Event()
    with sock:
        sock.recv(4096)  # its greeting
        answer = _frame(b'{"protocol": "%s", "nonce": "%s"}' % (PROTOCOL.encode(), b"ab" * 32))
        threading.Thread(target=_drip, args=(sock, answer, stop), daemon=True).start()
        thread.join(10)
        stop.set()
    listener.close()
    assert 2.5 < time.monotonic() - start < 5.0
    assert str(out[0]).startswith("party 1: refused party 0 (server) at 127.0.0.1:")
    assert "did not finish its part of joining in time" in str(out[0])


def test_an_authenticated_peer_dripping_a_message_is_named_within_the_timeout():
    """Past the handshake, a frame must arrive whole within the timeout (2 s), however often its bytes
    come: a peer dripping one is stopped, named."""
    stops: list = []
    _, client = _pair(stops)
    peer = client.peers[0]
    client._closing.set()  # no heartbeats from it: only the dripped frame
    data = b'{"t": "x", "n": 1, "v": "' + b"a" * 200 + b'"}'
    frame = _frame(data) + _mac(peer.key, b"%d" % peer.sent, data)
    stop = threading.Event()
    start = time.monotonic()
    threading.Thread(target=_drip, args=(peer.sock, frame, stop, 0.05), daemon=True).start()
    while not stops and time.monotonic() - start < 10:
        time.sleep(0.05)
    stop.set()
    assert 1.5 < time.monotonic() - start < 4.0
    assert stops[0].startswith("party 1 (client) stopped: no whole message from it for 2 s")

"""pibench's own channel between the parties of a run: authenticated, bounded, plain data, watched.

Two parties of a 2PC run do not trust each other, so before any backend starts, every rank joins rank
0 here, at the rendezvous address (`--rendezvous`, rank 0 listening):

1. **Authentication** (challenge-response): each side sends a fresh random nonce and proves it holds
   the run's shared secret with HMAC-SHA256(secret, role | rank | both nonces); the joining rank proves
   first, rank 0 answers with its own proof. A peer without the secret learns nothing it can replay
   and is refused in one line (exit 2); a fake rank 0 is refused by the joining rank the same way.
2. **What runs**: both sides' run descriptions (backend, suite digest, every option that changes what
   runs) are compared; a difference is named ("party 1 runs --full, party 0 does not").
3. **Transport addresses**: where the backend's own transport listens (CrypTen's key-value store, SPU's
   links) is exchanged here, after authentication, on ports chosen then.

After that the channel carries pibench's exchanges (the digest check, each variant's results) as
JSON, every frame length-prefixed, at most `MAX_FRAME` bytes, and tagged with an HMAC of a session
key and its sequence number, so nothing a peer sends is unpickled and nothing injected is accepted.
Every rank sends a heartbeat with what it is doing every `BEAT_S`; a peer silent for the timeout (a
frozen or vanished process, a cut link) ends this party with one line naming that peer and what it
was last doing, even while this party is blocked inside the backend.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import secrets
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pibench.util.errors import PibenchError

PROTOCOL = "pibench-peers/1"
MAX_FRAME = 16 * 2**20  # bytes of one message: a variant's results are a few kB to a few MB
MAX_GREETING = 4096  # bytes of a handshake message, before the peer has proved anything
BEAT_S = 1.0
TAG = 32  # bytes of an HMAC-SHA256 tag
MIN_SECRET_BYTES = 16
SECRET_ENV = "PIBENCH_SECRET"
WILDCARDS = ("0.0.0.0", "::", "")
# Joining waits the timeout, and at least this long: the other party may still be starting (a process
# that imports torch, CrypTen or jax takes seconds), so a short --timeout does not read start-up as a hang.
STARTUP_GRACE_S = 15.0


def load_secret(path: str | None) -> bytes:
    """The run's shared secret: from the file `path` (--secret-file), else the environment variable
    PIBENCH_SECRET; never from the command line, where other users see it. At least 16 bytes."""
    if path is not None:
        try:
            data = Path(path).read_bytes().strip()
        except OSError as err:
            raise PibenchError(f"--secret-file '{path}' cannot be read: {err.strerror or err}") from None
        where = f"--secret-file '{path}'"
    elif os.environ.get(SECRET_ENV):
        data, where = os.environ[SECRET_ENV].strip().encode(), f"${SECRET_ENV}"
    else:
        raise PibenchError(
            f"party mode needs the run's shared secret: --secret-file FILE or ${SECRET_ENV}, the same on every "
            "host (make one with: python3 -c 'import secrets; print(secrets.token_hex(32))' > FILE)"
        )
    if len(data) < MIN_SECRET_BYTES:
        raise PibenchError(f"the shared secret in {where} is {len(data)} bytes; use at least {MIN_SECRET_BYTES}")
    return data


def new_secret() -> bytes:
    """A secret for one local run (the runner hands it to its parties on their stdin)."""
    return secrets.token_hex(32).encode()


def check_listen_host(host: str, allow_wildcard: bool) -> None:
    """Refuse to listen on every interface (0.0.0.0, ::) unless asked for explicitly."""
    if host.strip("[]") in WILDCARDS and not allow_wildcard:
        raise PibenchError(
            f"rendezvous host '{host}' listens on every interface of this machine; name the address the other "
            "party reaches (e.g. this host's LAN address), or pass --listen-on-all-interfaces"
        )


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"|".join(parts), hashlib.sha256).digest()


class PeerError(PibenchError):
    """A peer broke the protocol, failed to authenticate, or stopped."""


@dataclass
class _Peer:
    rank: int
    sock: socket.socket
    address: str
    key: bytes  # the session key both sides derived after authentication
    sent: int = 0  # frames sent and received: the sequence numbers their tags cover
    received: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    doing: str = "joining"
    inbox: queue.Queue[Any] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    """`n` bytes from `sock`, all of them by `deadline` (time.monotonic()), else TimeoutError: a peer that
    drips its bytes cannot hold this party past the deadline, however often it sends one. The socket's
    own timeout is left as it is (another thread may be sending on it)."""
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise TimeoutError(f"{got} of {n} bytes came in time")
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _send_plain(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_plain(sock: socket.socket, refuse: str, deadline: float) -> dict[str, Any]:
    """A handshake message, whole by `deadline`: small, JSON, a mapping; anything else is refused without
    looking further (`refuse`: "party 0 (server): refused a peer at ADDRESS", what the error says first)."""
    try:
        (n,) = struct.unpack(">I", _recv_exact(sock, 4, deadline))
        if n > MAX_GREETING:
            raise PeerError(f"{refuse}: it sent a {n}-byte greeting; a pibench greeting is under {MAX_GREETING} bytes")
        data = _recv_exact(sock, n, deadline)
    except TimeoutError as err:
        raise PeerError(f"{refuse}: it did not finish its part of joining in time ({err})") from None
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PeerError(f"{refuse}: it sent something that is not a pibench greeting") from None
    if not isinstance(obj, dict):
        raise PeerError(f"{refuse}: it sent something that is not a pibench greeting")
    return obj


def _hex(obj: dict[str, Any], key: str, refuse: str) -> bytes:
    value = obj.get(key)
    try:
        if not isinstance(value, str) or len(value) > 256:
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise PeerError(f"{refuse}: it sent a malformed greeting ({key})") from None


class Peers:
    """This rank's authenticated connections: rank 0 to every other rank, the others to rank 0."""

    def __init__(
        self,
        rank: int,
        roles: dict[int, str],
        peers: dict[int, _Peer],
        timeout_s: float,
        on_stop: Callable[[str], None] | None = None,
    ) -> None:
        self.rank, self.roles, self.timeout_s = rank, roles, timeout_s
        self.peers: dict[int, _Peer] = {}
        self.doing = "joining"  # what this party is doing, in its heartbeats
        self._closing = threading.Event()
        self._seq = 0
        self._on_stop = on_stop or _exit_with
        for peer in peers.values():
            self._add(peer)
        threading.Thread(target=self._beat, daemon=True).start()

    def _add(self, peer: _Peer) -> None:
        """Start reading an authenticated peer's frames (and sending it heartbeats)."""
        peer.sock.settimeout(self.timeout_s)
        self.peers[peer.rank] = peer
        threading.Thread(target=self._read, args=(peer,), daemon=True).start()

    def name(self, rank: int) -> str:
        return f"party {rank} ({self.roles.get(rank, '?')})"

    # -- joining --------------------------------------------------------------------------------------
    @classmethod
    def serve(
        cls,
        listener: socket.socket,
        roles: dict[int, str],
        secret: bytes,
        describe: dict[str, Any],
        timeout_s: float,
        join_s: float,
        on_stop: Callable[[str], None] | None = None,
    ) -> tuple[Peers, dict[int, dict[str, Any]]]:
        """Rank 0: accept every other rank of `roles` on `listener` within `join_s`, authenticate each,
        and compare run descriptions; returns the channel (its peers silent for `timeout_s` stop the
        run) and each rank's description."""
        deadline = time.monotonic() + join_s
        channel = cls(0, roles, {}, timeout_s, on_stop)  # who joined hears heartbeats while others join
        joined = channel.peers
        described: dict[int, dict[str, Any]] = {}
        want = sorted(r for r in roles if r != 0)
        while len(joined) < len(want):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(f"party {r} ({roles[r]})" for r in want if r not in joined)
                where = ":".join(str(a) for a in listener.getsockname()[:2])
                raise PeerError(
                    f"party 0 (server) could not join the others: {missing} did not join at {where} "
                    f"within {join_s:.0f} s"
                )
            listener.settimeout(left)
            try:
                sock, addr = listener.accept()
            except TimeoutError:
                continue
            who = f"a peer at {addr[0]}:{addr[1]}"
            sock.settimeout(max(1.0, left))
            try:
                peer, theirs = _authenticate_joiner(sock, who, secret, roles, joined, describe, deadline)
                compare_runs(describe, theirs, "party 0 (server)", f"party {peer.rank} ({roles[peer.rank]})")
            except (OSError, ConnectionError, struct.error) as err:
                sock.close()
                channel.close()
                raise PeerError(f"party 0 (server): {who} broke off joining: {err}") from None
            except PeerError:
                sock.close()
                channel.close()
                raise
            described[peer.rank] = theirs
            channel._add(peer)
        return channel, described

    @classmethod
    def join(
        cls,
        rank: int,
        address: tuple[str, int],
        roles: dict[int, str],
        secret: bytes,
        describe: dict[str, Any],
        timeout_s: float,
        join_s: float,
        on_stop: Callable[[str], None] | None = None,
    ) -> tuple[Peers, dict[str, Any]]:
        """Rank `rank` > 0: reach rank 0 at `address` within `join_s` (retrying while it is not
        listening yet), authenticate both ways, compare run descriptions; returns the channel (rank 0
        silent for `timeout_s` stops the run) and rank 0's description."""
        host, port = address
        who = f"party 0 (server) at {host}:{port}"
        deadline = time.monotonic() + join_s
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=max(0.5, deadline - time.monotonic()))
                break
            except OSError as err:
                if time.monotonic() >= deadline:
                    raise PeerError(
                        f"party {rank} ({roles.get(rank, '?')}) could not join the others: {who} did not answer "
                        f"within {join_s:.0f} s ({err.strerror or err})"
                    ) from None
                time.sleep(0.2)
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            peer, theirs = _authenticate_server(sock, who, rank, secret, describe, deadline)
            compare_runs(describe, theirs, f"party {rank} ({roles.get(rank, '?')})", "party 0 (server)")
        except (OSError, ConnectionError, struct.error) as err:
            sock.close()
            raise PeerError(f"party {rank} ({roles.get(rank, '?')}): {who} broke off joining: {err}") from None
        except PeerError:
            sock.close()
            raise
        return cls(rank, roles, {0: peer}, timeout_s, on_stop), theirs

    # -- messages -------------------------------------------------------------------------------------
    def _send(self, peer: _Peer, obj: Any) -> None:
        data = json.dumps(obj, allow_nan=True).encode()
        if len(data) > MAX_FRAME:
            raise PeerError(f"a message of {len(data)} bytes is over the channel's {MAX_FRAME}")
        with peer.lock:
            tag = _mac(peer.key, b"%d" % peer.sent, data)
            peer.sent += 1
            peer.sock.sendall(struct.pack(">I", len(data)) + data + tag)

    def _read(self, peer: _Peer) -> None:
        """Frames from `peer`: heartbeats note what it does; other messages go to its inbox. A frame that
        is too big, mistagged or not JSON, a closed connection or silence past the timeout stop the run."""
        name = self.name(peer.rank)
        try:
            while True:
                try:  # a frame, its first byte within the timeout and the whole of it too
                    deadline = time.monotonic() + self.timeout_s
                    (n,) = struct.unpack(">I", _recv_exact(peer.sock, 4, deadline))
                    if n > MAX_FRAME:
                        raise PeerError(f"{name} sent a {n}-byte message, over the channel's {MAX_FRAME}")
                    data, tag = _recv_exact(peer.sock, n, deadline), _recv_exact(peer.sock, TAG, deadline)
                except TimeoutError as err:
                    if self._closing.is_set():
                        return
                    what = "nothing from it" if str(err).startswith("0 of 4 ") else "no whole message from it"
                    raise PeerError(
                        f"{name} stopped: {what} for {self.timeout_s:.0f} s while it was {peer.doing} "
                        f"(frozen, gone or cut off); {self.name(self.rank)}, this one, was {self.doing}"
                    ) from None
                if not hmac.compare_digest(tag, _mac(peer.key, b"%d" % peer.received, data)):
                    raise PeerError(f"{name} sent a message that does not carry the session's tag (tampered?)")
                peer.received += 1
                peer.last_seen = time.monotonic()
                try:
                    obj = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise PeerError(f"{name} sent a message that is not JSON") from None
                if not isinstance(obj, dict):
                    raise PeerError(f"{name} sent a malformed message")
                if obj.get("t") == "beat":
                    peer.doing = str(obj.get("doing", "?"))[:200]
                elif obj.get("t") == "bye":
                    peer.inbox.put(("bye", None))
                    return
                else:
                    peer.inbox.put(("msg", obj))
        except (OSError, ConnectionError, struct.error) as err:
            if not self._closing.is_set():
                self._stop(f"{name} left while it was {peer.doing} ({err})")
        except PeerError as err:
            self._stop(str(err))

    def _stop(self, why: str) -> None:
        if not self._closing.is_set():
            self._closing.set()
            self._on_stop(why)

    def _beat(self) -> None:
        while not self._closing.wait(min(BEAT_S, self.timeout_s / 4)):
            for peer in list(self.peers.values()):
                try:
                    self._send(peer, {"t": "beat", "doing": self.doing})
                except OSError:
                    pass  # its reader says what happened

    def _next(self, peer: _Peer, what: str) -> dict[str, Any]:
        """The next message from `peer`; the peer's heartbeats keep this wait open, its silence ends it."""
        while True:
            try:
                kind, obj = peer.inbox.get(timeout=1.0)
            except queue.Empty:
                if self._closing.is_set():
                    raise PeerError(f"{self.name(peer.rank)} stopped while this party waited for {what}") from None
                continue
            if kind == "bye":
                raise PeerError(f"{self.name(peer.rank)} left while this party waited for {what}")
            return obj

    def exchange(self, obj: Any, among: tuple[int, ...] = (0, 1)) -> list[Any]:
        """Every rank of `among`'s `obj`, by rank (plain JSON data; rank 0 gathers and sends back)."""
        self._seq += 1
        seq = self._seq
        if self.rank != 0:
            self._send(self.peers[0], {"t": "x", "n": seq, "v": obj})
            reply = self._next(self.peers[0], "the exchange's answer")
            values = reply.get("v")
            if (
                reply.get("t") != "xs"
                or reply.get("n") != seq
                or not isinstance(values, list)
                or len(values) != len(among)
            ):
                raise PeerError(f"{self.name(0)} answered an exchange out of order")
            return values
        gathered = {0: obj}
        for r in among[1:]:
            msg = self._next(self.peers[r], "its part of an exchange")
            if msg.get("t") != "x" or msg.get("n") != seq:
                raise PeerError(f"{self.name(r)} sent a message out of order")
            gathered[r] = msg.get("v")
        values = [gathered[r] for r in among]
        for r in among[1:]:
            self._send(self.peers[r], {"t": "xs", "n": seq, "v": values})
        return values

    def close(self) -> None:
        """Say goodbye (a peer that then closes is not 'gone') and close the connections."""
        for peer in self.peers.values():
            try:
                self._send(peer, {"t": "bye"})
            except OSError:
                pass
        self._closing.set()
        for peer in self.peers.values():
            try:
                peer.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            peer.sock.close()


def _exit_with(why: str) -> None:
    """The default end of a run whose peer stopped: one line, exit 2, even while the main thread is
    blocked inside a backend's C++ code that nothing else would interrupt."""
    print(f"pibench: error: {why}", file=sys.stderr, flush=True)
    os._exit(2)


def _authenticate_joiner(
    sock: socket.socket,
    who: str,
    secret: bytes,
    roles: dict[int, str],
    joined: dict[int, _Peer],
    mine_described: dict[str, Any],
    deadline: float,
) -> tuple[_Peer, dict[str, Any]]:
    """Rank 0's side of the handshake with one joining rank, over by `deadline` (the join's): its greeting,
    its proof (checked before anything else it says is used), then rank 0's proof and both runs' descriptions."""
    refuse = f"party 0 (server): refused {who}"
    hello = _recv_plain(sock, refuse, deadline)
    if hello.get("protocol") != PROTOCOL:
        raise PeerError(f"{refuse}: it does not speak {PROTOCOL} (another program?)")
    rank = hello.get("rank")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank not in roles or rank == 0 or rank in joined:
        raise PeerError(f"{refuse}: it claims rank {str(rank)[:20]}, not a free rank of this run")
    theirs = _hex(hello, "nonce", refuse)
    mine = secrets.token_bytes(32)
    _send_plain(sock, {"protocol": PROTOCOL, "nonce": mine.hex()})
    answer = _recv_plain(sock, refuse, deadline)
    if not hmac.compare_digest(_hex(answer, "proof", refuse), _mac(secret, b"joiner", b"%d" % rank, theirs, mine)):
        _send_plain(sock, {"refused": "it does not hold this run's shared secret"})
        raise PeerError(f"{refuse}: it does not hold this run's shared secret")
    described = answer.get("describe")
    if not isinstance(described, dict):
        raise PeerError(f"{refuse}: it sent no description of its run")
    proof = _mac(secret, b"server", b"%d" % rank, theirs, mine)
    _send_plain(sock, {"proof": proof.hex(), "describe": mine_described})
    key = _mac(secret, b"session", b"%d" % rank, theirs, mine)
    return _Peer(rank, sock, who.removeprefix("a peer at "), key), described


def _authenticate_server(
    sock: socket.socket, who: str, rank: int, secret: bytes, mine_described: dict[str, Any], deadline: float
) -> tuple[_Peer, dict[str, Any]]:
    """A joining rank's side, over by `deadline` (the join's): prove, then check rank 0's proof before
    anything it says is believed."""
    refuse = f"party {rank}: refused {who}"
    mine = secrets.token_bytes(32)
    _send_plain(sock, {"protocol": PROTOCOL, "rank": rank, "nonce": mine.hex()})
    hello = _recv_plain(sock, refuse, deadline)
    if hello.get("protocol") != PROTOCOL:
        raise PeerError(f"{refuse}: it does not speak {PROTOCOL} (another program?)")
    theirs = _hex(hello, "nonce", refuse)
    _send_plain(sock, {"proof": _mac(secret, b"joiner", b"%d" % rank, mine, theirs).hex(), "describe": mine_described})
    answer = _recv_plain(sock, refuse, deadline)
    if "refused" in answer:
        raise PeerError(f"party {rank}: {who} refused this party: it holds another shared secret")
    if not hmac.compare_digest(_hex(answer, "proof", refuse), _mac(secret, b"server", b"%d" % rank, mine, theirs)):
        raise PeerError(f"{refuse}: it does not hold this run's shared secret")
    described = answer.get("describe")
    if not isinstance(described, dict):
        raise PeerError(f"{refuse}: it sent no description of its run")
    key = _mac(secret, b"session", b"%d" % rank, mine, theirs)
    return _Peer(0, sock, who, key), described


def compare_runs(mine: dict[str, Any], theirs: dict[str, Any], me: str, other: str) -> None:
    """Refuse to run when two ranks would run different things (`describe_run`), naming each difference."""
    keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if keys:
        diff = "; ".join(f"{k} {_short(theirs.get(k))} there, {_short(mine.get(k))} here" for k in keys)
        raise PeerError(f"{me}: {other} runs something else: {diff}; give every host the same suite and options")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:12] + "..."

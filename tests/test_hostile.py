"""Two parties that do not trust each other, through `pibench party` and `pibench run` on loopback: a
fake peer runs no code, a peer without the secret is refused, and no peer holds the other past the
timeout (frozen peers, a frozen dealer, different options or backends on the two sides)."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time

import psutil
import pytest

from pibench.util.procs import free_port, kill_tree
from tests.conftest import ROOT, SECRET, party_processes, write_suite

TINY = "name: tiny\nmodel: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\n"
# long enough to be caught mid-run
SLOW = "name: slow\nmodel: {L: 8, H: 2, d: 64, T: 16}\nvariants: [sm_ln_g, sm_ln_r, sm_scfuffn]\n"


class Marker:
    """A pickle whose loading creates a file: the code a hostile peer would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _party(rank, rendezvous, suite, *extra, secret=SECRET, out=None):
    cmd = [sys.executable, "-m", "pibench", "party", "--rank", str(rank), "--rendezvous", rendezvous, str(suite)]
    cmd += [*extra, *(["--out", str(out)] if out else [])]
    env = {**os.environ, "PIBENCH_SECRET": secret}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _connect(port, deadline_s=60):
    """A connection to a party that is still importing its backend: retried until it listens."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _finish(proc, timeout=60):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_tree(proc.pid)
    return proc.returncode, out, err


def _one_line_error(err):
    assert err.count("\n") == 1 and err.startswith("pibench: error: ") and "Traceback" not in err, err
    return err.removeprefix("pibench: error: ").strip()


@pytest.mark.parametrize("backend", ["crypten", "spu"])
def test_a_fake_peer_runs_no_code_and_one_without_the_secret_is_refused(tmp_path, backend):
    """Issue 19's reproduction: a fake rank 1 sends rank 0 a pickle whose loading runs code. Rank 0 runs
    none of it, names the peer in one line, exits 2 and leaves no record. Then a real rank 1 holding
    another secret: both refuse each other."""
    suite = write_suite(tmp_path, TINY + f"backend: {backend}\n")
    marker, out = tmp_path / "pwned", tmp_path / "r.json"
    port = free_port()
    rank0 = _party(0, f"tcp://127.0.0.1:{port}", suite, "--timeout", "20", out=out)
    with _connect(port) as sock:
        bomb = pickle.dumps(Marker(marker))
        sock.sendall(struct.pack(">I", len(bomb)) + bomb)
        code, _, err = _finish(rank0)
    assert code == 2 and not marker.exists() and not out.exists()
    message = _one_line_error(err)
    assert message.startswith("party 0 (server): refused a peer at 127.0.0.1:"), message
    assert "not a pibench greeting" in message or "greeting; a pibench greeting is under" in message

    port = free_port()
    rank0 = _party(0, f"tcp://127.0.0.1:{port}", suite, "--timeout", "20", out=out)
    rank1 = _party(1, f"tcp://127.0.0.1:{port}", suite, "--timeout", "20", secret="another secret, 24 bytes")
    (c0, _, e0), (c1, _, e1) = _finish(rank0), _finish(rank1)
    assert (c0, c1) == (2, 2) and not out.exists()
    assert _one_line_error(e0).endswith("it does not hold this run's shared secret")
    assert "refused this party: it holds another shared secret" in _one_line_error(e1)


def test_a_peer_dripping_its_greeting_ends_rank_0_within_the_timeout(tmp_path):
    """Issue 32's reproduction: a fake rank 1 sends one byte a second; rank 0 (--timeout 15, the
    shortest join: start-up's grace) once waited 130 s past its timeout. It ends within the timeout
    and a few seconds, in one line naming the peer, and writes no record."""
    suite, out = write_suite(tmp_path, TINY), tmp_path / "r.json"
    port = free_port()
    rank0 = _party(0, f"tcp://127.0.0.1:{port}", suite, "--timeout", "15", out=out)
    with _connect(port) as sock:
        start = time.monotonic()
        sock.settimeout(1)
        code = None
        for byte in struct.pack(">I", 300) + b'{"protocol": ' * 30:  # bounded: 394 bytes, 1 a second
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            if rank0.poll() is not None or time.monotonic() - start > 40:
                break
            time.sleep(1.0)
        code, _, err = _finish(rank0)
    assert time.monotonic() - start < 15 + 5
    assert code == 2 and not out.exists()
    message = _one_line_error(err)
    assert message.startswith("party 0 (server): refused a peer at 127.0.0.1:"), message
    assert "did not finish its part of joining in time" in message


def test_a_fake_rank_0_runs_no_code_on_rank_1(tmp_path):
    suite = write_suite(tmp_path, TINY)
    marker = tmp_path / "pwned"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        rank1 = _party(1, f"tcp://127.0.0.1:{listener.getsockname()[1]}", suite, "--timeout", "20")
        listener.settimeout(60)
        sock, _ = listener.accept()
        with sock:
            sock.recv(4096)  # its greeting
            bomb = pickle.dumps(Marker(marker))
            sock.sendall(struct.pack(">I", len(bomb)) + bomb)
            code, _, err = _finish(rank1)
    assert code == 2 and not marker.exists()
    assert _one_line_error(err).startswith("party 1: refused party 0 (server) at 127.0.0.1:")


def test_run_options_and_backends_must_agree(tmp_path):
    """--full on one side only once hung both sides for over 200 s; an SPU party against a CrypTen one
    said "could not join" after 70 s. Both are named at once, on both sides."""
    suite = write_suite(tmp_path, TINY)
    for theirs, difference in ((["--full"], "full"), (["--backend", "spu"], "backend")):
        port = free_port()
        start = time.monotonic()
        rank0 = _party(0, f"tcp://127.0.0.1:{port}", suite, "--timeout", "30")
        rank1 = _party(1, f"tcp://127.0.0.1:{port}", suite, "--timeout", "30", *theirs)
        (c0, _, e0), (c1, _, e1) = _finish(rank0), _finish(rank1)
        assert (c0, c1) == (2, 2) and time.monotonic() - start < 25  # start-up, then at once
        assert f"party 1 (client) runs something else: {difference} " in _one_line_error(e0)
        assert f"party 0 (server) runs something else: {difference} " in _one_line_error(e1)


def _wait_joined(proc, deadline_s=60):
    """Until `proc` (a party) has an established connection: it has joined the other."""
    end = time.monotonic() + deadline_s
    party = psutil.Process(proc.pid)
    while time.monotonic() < end:
        if any(c.status == psutil.CONN_ESTABLISHED for c in party.net_connections(kind="tcp")):
            return
        time.sleep(0.1)
    raise AssertionError("the party never joined")


@pytest.mark.parametrize("backend", ["crypten", "spu"])
def test_a_frozen_peer_on_another_host_is_named_within_the_timeout(tmp_path, backend):
    """Two-host mode, rank 1 frozen (SIGSTOP) mid-run: rank 0 ends within the timeout plus a few seconds,
    in one line naming party 1 and what it was doing (CrypTen's groups once waited 30 minutes; SPU's
    party once exited 255 after 90-110 s saying nothing)."""
    suite = write_suite(tmp_path, SLOW + f"backend: {backend}\n")
    port = free_port()
    rank0 = _party(0, f"tcp://127.0.0.1:{port}", suite, "--timeout", "6", "--full", out=tmp_path / "r.json")
    rank1 = _party(1, f"tcp://127.0.0.1:{port}", suite, "--timeout", "6", "--full")
    try:
        _wait_joined(rank1)
        time.sleep(2)  # into the first variant
        rank1.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        code, _, err = _finish(rank0)
        elapsed = time.monotonic() - start
    finally:
        kill_tree(rank1.pid)
    assert code == 2 and elapsed < 6 + 4, (elapsed, err)
    *progress, last = err.splitlines()  # a party prints its progress on stderr, the error last
    assert all(line.startswith("[") for line in progress), err
    message = _one_line_error(last + "\n")
    assert message.startswith("party 1 (client) stopped: nothing from it for 6 s while it was "), message
    assert "variant 'sm_ln_g'" in message and not (tmp_path / "r.json").exists()


def _run(suite, *extra):
    cmd = [sys.executable, "-m", "pibench", "run", str(suite), "--no-progress", "--full", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    "setting, rank, name", [("backend: spu", 1, "party 1 (client)"), ("crypten: {provider: TTP}", 2, "party 2 (TTP)")]
)
def test_a_frozen_party_of_a_local_run_is_named(tmp_path, setting, rank, name):
    """A local SPU run with rank 1 frozen once took 137 s at --timeout 60 and blamed both parties (SPU's
    own heartbeat kept rank 0 looking alive); a frozen TTP dealer was never named."""
    suite = write_suite(tmp_path, SLOW + setting + "\n")
    proc = _run(suite, "--timeout", "8", "--out", str(tmp_path / "r.json"))
    try:
        end = time.monotonic() + 90
        while rank not in party_processes(proc.pid) and time.monotonic() < end:
            time.sleep(0.1)
        victim = party_processes(proc.pid)[rank]
        end = time.monotonic() + 90
        while not any(c.status == psutil.CONN_ESTABLISHED for c in victim.net_connections(kind="tcp")):
            assert time.monotonic() < end, "never joined"
            time.sleep(0.1)
        time.sleep(2)
        victim.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        code, _, err = _finish(proc, timeout=90)
        elapsed = time.monotonic() - start
    finally:
        kill_tree(proc.pid)
    assert code == 2 and elapsed < 8 + 4, (elapsed, err)
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"pibench: error: {name} made no progress for 8 s during variant "), err
    assert "its process is frozen" in message and " and " not in message.split(" made ")[0]

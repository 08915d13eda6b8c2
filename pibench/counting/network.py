"""Network profiles, and the latency projection from a loopback measurement to any profile.

Profiles (bandwidth per direction, round-trip time):
    loopback   as measured, no link modelled
    lan        1 Gbit/s, 0.5 ms    a switched gigabit LAN
    wan        400 Mbit/s, 40 ms   the WAN setting common in 2PC inference papers (e.g. BumbleBee's)
    paper-wan  100 Mbit/s, 80 ms   the WAN of the seed paper (Jha & Reagen, sec. 5)
    "BW,RTT"   custom, e.g. "50mbit,100ms" (bandwidth in bit/kbit/mbit/gbit per second, RTT in us/ms/s)

Projection (`project`), from a loopback run's wall_s, comm_s (seconds inside exchanges), round trips
and the bytes the busier party sent:

    compute = wall_s - comm_s                      CrypTen's exchanges block: no overlap with compute
    wire    = max_sent_bytes * 8 * WIRE_OVERHEAD / bandwidth
    latency = compute + max(comm_s, wire) + round_trips * RTT

- compute and communication are serial: CrypTen's exchanges are blocking;
- on loopback an exchange still costs CPU (copies, system calls): comm_s. On a link that work
  overlaps with the bytes on the wire, so the exchanges take the longer of the two;
- both parties send at once on a full-duplex link, so the busier direction sets the wire time;
- round trips, not rounds: a round is one blocking exchange, but across an emulated link (bench/
  projection_check.py) gloo's 2-party all_reduce of 3 or more elements waits for two round trips (a
  reduce-scatter and an all-gather step), every other exchange for one; records count them per kind
  (`round_trips`; older records and predictions fall back to rounds, which then undercount up to 2x);
- WIRE_OVERHEAD: TCP/IP headers on 1500-byte frames (52 of every 1500 bytes, about 3.6%).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pibench.util.errors import PibenchError, did_you_mean

WIRE_OVERHEAD = 1500 / 1448


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    bandwidth_bps: float | None  # bits per second per direction; None: not modelled (loopback)
    rtt_s: float

    def describe(self) -> str:
        if self.bandwidth_bps is None:
            return "loopback"
        return f"{self.name} ({_rate(self.bandwidth_bps)}, {self.rtt_s * 1e3:g} ms RTT)"


def _rate(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g} {unit}"
    return f"{bps:g} bit/s"


PROFILES = {
    "loopback": NetworkProfile("loopback", None, 0.0),
    "lan": NetworkProfile("lan", 1e9, 0.5e-3),
    "wan": NetworkProfile("wan", 400e6, 40e-3),
    "paper-wan": NetworkProfile("paper-wan", 100e6, 80e-3),
}

DEFAULT_PROJECTIONS = ("lan", "paper-wan")
MIN_BANDWIDTH, MAX_BANDWIDTH, MAX_RTT_S = 1e3, 1e13, 60.0  # custom profiles: bit/s, bit/s, seconds

_BW = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_T = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_profile(text: str) -> NetworkProfile:
    """A profile by name, or "BANDWIDTH,RTT" such as "100mbit,80ms"."""
    if text in PROFILES:
        return PROFILES[text]
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*,\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*", text.lower()
    )
    if not match:
        raise PibenchError(
            f"network profile '{text[:60]}'{did_you_mean(text[:60], PROFILES)} is neither one of "
            f"{', '.join(PROFILES)} nor BANDWIDTH,RTT like '100mbit,80ms'"
        )
    bw, bw_unit, rtt, rtt_unit = match.groups()
    bandwidth = float(bw) * _BW[bw_unit]
    rtt_s = float(rtt) * _T[rtt_unit]
    if not MIN_BANDWIDTH <= bandwidth <= MAX_BANDWIDTH:
        raise PibenchError(f"network profile '{text[:60]}': bandwidth must be positive, 1 kbit/s to 10 Tbit/s")
    if rtt_s > MAX_RTT_S:
        raise PibenchError(f"network profile '{text[:60]}': RTT must be at most {MAX_RTT_S:g} s")
    return NetworkProfile(text.strip(), bandwidth, rtt_s)


def project(wall_s: float, comm_s: float, rounds: float, max_sent_bytes: int, profile: NetworkProfile) -> float:
    """Projected seconds of a forward pass under `profile` (see the module docstring)."""
    if profile.bandwidth_bps is None:
        return wall_s
    wire = max_sent_bytes * 8 * WIRE_OVERHEAD / profile.bandwidth_bps
    return (wall_s - comm_s) + max(comm_s, wire) + rounds * profile.rtt_s

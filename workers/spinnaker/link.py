"""Bytes on the board's 100 Mb/s Ethernet per spike and per recorded timestep, packet framing included.

Spikes cross the host link in EIEIO messages of at most 256 bytes (spinnman.constants.UDP_MESSAGE_MAX_SIZE):
a 2-byte header, optionally a 2-byte key prefix and/or a payload base (sPyNNaker's buffer manager uses a
4-byte timestamp there for preloaded spike arrays, spinn_front_end_common/interface/buffer_management/
buffer_manager.py), then one key per spike. Each message is one UDP datagram: + UDP 8 + IPv4 20 + Ethernet
header 14 + FCS 4 + preamble 8 + inter-frame gap 12 = 66 bytes of wire time. This gives the figures the
SpiNNaker brief quotes: 16-bit keys with a prefix 2.56 B/spike, 32-bit keys 5.11 B/spike; preloaded spike
arrays (32-bit keys + timestamp) 5.19 B/spike. Recorded output comes back as sPyNNaker's spike bitfields:
per core and timestep a 4-byte time and one bit per neuron (spynnaker/pyNN/models/common/neuron_recorder.py),
read in the same 256-byte messages. The link is taken as full duplex (input down, output up, each 100 Mb/s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LINK_BYTES_PER_S = 100e6 / 8
MESSAGE_MAX_BYTES = 256
WIRE_OVERHEAD_BYTES = 8 + 20 + 14 + 4 + 8 + 12
EIEIO_HEADER_BYTES = 2


@dataclass(frozen=True)
class Framing:
    name: str
    key_bytes: int
    extra_header_bytes: int  # prefix and/or payload base
    wrapper_bytes: int = 0  # an SDP header around the EIEIO message (live injection), per message

    @property
    def keys_per_message(self) -> int:
        return (MESSAGE_MAX_BYTES - EIEIO_HEADER_BYTES - self.extra_header_bytes) // self.key_bytes

    @property
    def bytes_per_spike(self) -> float:
        return (MESSAGE_MAX_BYTES + self.wrapper_bytes + WIRE_OVERHEAD_BYTES) / self.keys_per_message


KEYS_16_PREFIX = Framing("16-bit keys + 16-bit prefix (live injection)", 2, 2)
KEYS_32 = Framing("32-bit keys (live injection)", 4, 0)
# What sPyNNaker 7.4.1's LiveEventConnection.send_events sends by default (spinn_front_end_common/utilities/
# connections/live_event_connection.py): KEY_16_BIT messages of 127 atom ids (the injector core ORs in its
# key prefix), each inside an SDP packet (8-byte header + 2 bytes of padding) to the injector's core.
LIVE_16 = Framing("16-bit atom ids in SDP (sPyNNaker LiveEventConnection, live injection)", 2, 0, 10)
KEYS_32_TIMESTAMP = Framing("32-bit keys + timestamp (preloaded spike arrays, what the backend sends)", 4, 4)


def recorded_bytes_per_step(neurons: int, atoms_per_core: int, recorded: np.ndarray | None = None) -> float:
    """Wire bytes of one timestep of spike recording of a population split into ``atoms_per_core`` cores:
    per core a 4-byte time and a bitfield of the neurons it records (``recorded``, population indices; all by
    default), nothing for a core that records none (sPyNNaker 7.4.1 ``NeuronRecorder``)."""
    cores = math.ceil(neurons / atoms_per_core)
    if recorded is None:
        counts = [min(atoms_per_core, neurons - c * atoms_per_core) for c in range(cores)]
    else:
        counts = np.bincount(np.asarray(recorded, np.int64) // atoms_per_core, minlength=cores).tolist()
    raw = sum(4 + 4 * math.ceil(n / 32) for n in counts if n)
    return raw * (MESSAGE_MAX_BYTES + WIRE_OVERHEAD_BYTES) / MESSAGE_MAX_BYTES


def raw_pixel_bytes_per_km2(gsd_m: float, bands: int, bytes_per_sample: int) -> float:
    """Payload bytes of one km² of pixels sent once (no framing): what any network on the board must at
    least receive over the host link, whatever its input code, unless the host itself compresses."""
    return 1e6 / gsd_m**2 * bands * bytes_per_sample


def level_code_bytes_per_km2(gsd_m: float, bands: int, levels: int) -> float:
    """The same pixels as the model sees them: one of ``levels + 1`` input levels per pixel-band, packed
    at log2(levels + 1) bits. A lower bound for a host that sends levels instead of pixels."""
    return 1e6 / gsd_m**2 * bands * math.log2(levels + 1) / 8

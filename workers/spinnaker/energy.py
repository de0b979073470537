"""SpiNN-5 board power, as the ESTIMATE sPyNNaker's own power model gives it.

Coefficients from sPyNNaker 1!7.4.1 itself (spinn_machine/version/version_5.py and version_spin1.py), which
cite Stromatias et al., "Power analysis of large-scale, real-time neural networks on SpiNNaker" (IJCNN 2013)
and Painkras et al., "SpiNNaker: a 1-W 18-core system-on-chip" (JSSC 2013): 26.84 W per idle 48-chip board,
+0.034 W per active core, 1 nJ per multicast packet (25 pJ/bit x 40 bits). Every figure here is an estimate.
"""

from __future__ import annotations

BOARD_IDLE_W = 26.84
CORE_ACTIVE_W = 0.034
JOULES_PER_PACKET = 25e-12 * 40
NOTE = "estimate: SpiNN-5 power model of sPyNNaker 1!7.4.1 (workers/spinnaker/energy.py cites the sources)"


def board_watts(boards: int, active_cores: int) -> float:
    return BOARD_IDLE_W * boards + CORE_ACTIVE_W * active_cores


def joules_per_patch(boards: int, active_cores: int, patches_per_s: float, packets_per_patch: float) -> float:
    """Power is drawn whether or not the copies are busy: spread over the patches actually scanned per
    second, so a plan bound by the link or by compute pays for idle time; plus each spike's packet energy."""
    return (
        board_watts(boards, active_cores) / max(patches_per_s, 1e-9) + JOULES_PER_PACKET * packets_per_patch
    )


def km2_per_patch(patch_size: int, gsd_m: float) -> float:
    """Area each patch adds at the default half-patch chip stride."""
    return (patch_size // 2 * gsd_m) ** 2 / 1e6


def floor_joules_per_km2(link_bytes_per_km2: float, link_bytes_per_s: float, boards: int = 1) -> float:
    """The least energy per km² of any network on the board: the board cannot be off while the km²'s bytes
    cross its host link, so at least its idle power for that long (every core and packet extra)."""
    return BOARD_IDLE_W * boards * link_bytes_per_km2 / link_bytes_per_s

"""Two stated power bases for one CPU core running the emulator. Both are ESTIMATES, not measurements of
the machine the bench runs on (cloud machines rarely name their SKU, and none exposes wall power):

- ``TDP_SHARE``: one core's share of a package TDP, AMD EPYC 7763 (64 cores, 280 W TDP, AMD's product page
  amd.com/en/products/cpu/amd-epyc-7763). It leaves out memory, board, fans and PSU losses, so it flatters
  the CPU.
- ``SERVER_WALL``: a whole two-socket EPYC 7763 server at the wall, per core. The total is assembled from
  stated parts, not measured: 2 x 280 W packages (TDP), 16 DDR4 RDIMMs at ~5 W, 100 W for fans, board, NIC
  and BMC, through a 94 % efficient (80 PLUS Platinum at mid load) power supply; about 790 W over 128
  cores. Published SPECpower_ssj2008 full-load results (spec.org/power_ssj2008/results) are where to check
  it for a given server. It counts what a scanning server really draws per busy core, so it is the fairer
  side for the board, whose figure is a whole board's power.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PowerBasis:
    name: str
    watts_per_core: float
    source: str


PACKAGE_W, CORES_PER_PACKAGE = 280.0, 64
TDP_SHARE = PowerBasis(
    "tdp_share",
    PACKAGE_W / CORES_PER_PACKAGE,
    "one core's share of a package TDP: AMD EPYC 7763, 280 W / 64 cores (amd.com product page); estimate",
)
_SERVER_PARTS_W = 2 * PACKAGE_W + 16 * 5.0 + 100.0
_PSU_EFFICIENCY = 0.94
SERVER_WALL = PowerBasis(
    "server_wall",
    _SERVER_PARTS_W / _PSU_EFFICIENCY / (2 * CORES_PER_PACKAGE),
    "whole 2-socket EPYC 7763 server at the wall per core: (2 x 280 W TDP + 16 DIMMs x 5 W + 100 W fans, "
    "board, NIC, BMC) / 0.94 PSU / 128 cores; assembled estimate, check against SPECpower_ssj2008 results",
)
BASES = (TDP_SHARE, SERVER_WALL)

"""The planner's copy count is what sPyNNaker's virtual-board mapping places, and one more copy fails.

These run the real sPyNNaker toolchain (partitioning, placement, routing) on a virtual 48-chip board in a
private workspace; nothing reads or writes the user's home directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("model", ["landcover-landsat", "trees-rgb"])
def test_plan_map_agrees_with_spynnaker(model: str, tmp_path: Path) -> None:
    """Full-size mappings, ~8 minutes per model (N and N + 1 copies, three layouts); the fast tests cover
    the SDRAM formula on a small network and the copy counts on the shipped ones."""
    env = {**os.environ, "SPIKESCAN_DATA_DIR": str(tmp_path), "HOME": str(tmp_path / "user-home")}
    done = subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "plan", "--model", model, "--map"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(done.stdout)
    assert plan["copies_per_board"] >= 1
    assert plan["projected_patches_per_s"] > 0 and plan["energy_per_patch_j"] > 0
    # ``mapping`` is the headline layout's: the copies the figures are for, N placed and N + 1 refused.
    mapping = plan["mapping"]
    assert mapping["copies_placed"] == plan["copies"], mapping
    assert mapping["next_fails"] and mapping["next_failure"] == "placement", mapping
    assert mapping["agrees"] is True
    own = plan["layouts"]["per-copy input"]
    cores = own["copies"] * plan["cores_per_copy"] + plan["shared_cores"]
    assert own["mapping"]["application_cores"] == cores
    assert all(layout["mapping_agrees"] is True for layout in plan["layouts"].values()), plan["layouts"]
    # Shared input: 2 x 2 blocks of copies with one input population each, placed and routed by sPyNNaker.
    shared = plan["shared_input"]["mapping"]
    # The planner counts chips' SDRAM as well as cores, so it agrees for every layout: landcover's shared
    # layout places one copy more (cores), trees-rgb's places 5 of the 7 its cores would allow (SDRAM).
    assert shared["agrees"] is True and shared["next_failure"] == "placement", shared
    assert shared["copies_placed"] == plan["shared_input"]["copies"]
    assert shared["application_cores"] == plan["shared_input"]["application_cores"]
    # Strips (input shared across blocks): placed and refused one more, cores as planned.
    strip = plan["strip_input"]["mapping"]
    assert strip["agrees"] is True and strip["next_failure"] == "placement", strip
    assert strip["application_cores"] == plan["strip_input"]["application_cores"]
    # sPyNNaker's own per-core reservations: the planner's synaptic matrices exactly, the rest within its
    # allowance.
    from workers.spinnaker.sdram import CORE_OTHER_BYTES

    layouts = ((own["mapping"], own), (shared, plan["shared_input"]), (strip, plan["strip_input"]))
    for result, planned in layouts:
        for name, synapses in result["sdram"]["max_core_synapse_bytes_by_population"].items():
            assert planned["sdram_bytes_by_core"][name] - CORE_OTHER_BYTES == synapses, name
            reserved = result["sdram"]["max_core_bytes_by_population"][name]
            assert reserved <= planned["sdram_bytes_by_core"][name], name
    # The user's home was never touched: sPyNNaker's config lives in the project's workspace.
    assert not (tmp_path / "user-home" / ".spynnaker.cfg").exists()
    assert (tmp_path / "spinnaker" / "home" / ".spynnaker.cfg").is_file()


def test_board_weights_read_back_run_in_the_emulator(tmp_path: Path) -> None:
    from models import package
    from spikescan.config import Settings
    from workers.spinnaker.planner import board_weight_agreement

    report = board_weight_agreement(
        package.load("landcover-landsat"), Settings(data_dir=tmp_path), patches=200
    )
    assert report["patches"] == 200
    assert 0 < report["board_step"] <= 1
    assert report["class_agreement"] == 1.0, report  # one-hot input, cumulative conv1 weights included


def test_link_framing_gives_the_bytes_per_spike_of_256_byte_messages() -> None:
    from spinnman.constants import UDP_MESSAGE_MAX_SIZE

    from workers.spinnaker import link

    assert link.MESSAGE_MAX_BYTES == UDP_MESSAGE_MAX_SIZE
    assert link.KEYS_16_PREFIX.keys_per_message == 126
    assert round(link.KEYS_16_PREFIX.bytes_per_spike, 2) == 2.56
    assert round(link.KEYS_32.bytes_per_spike, 2) == 5.11
    assert link.KEYS_32_TIMESTAMP.bytes_per_spike > link.KEYS_32.bytes_per_spike
    # 5,376 output neurons in 21 cores of 256: 21 x (4-byte time + 32 bytes of bits), plus wire framing.
    assert link.recorded_bytes_per_step(5376, 256) == pytest.approx(21 * 36 * 322 / 256)


@pytest.mark.parametrize("model", ["landcover-landsat", "trees-rgb"])
def test_plan_projection_is_under_every_bound_it_counts(model: str) -> None:
    from models import package
    from workers.spinnaker.planner import plan

    p = plan(package.load(model))
    assert p.sampled_patches >= 512 and p.input_code == "one-hot levels"
    assert 0 < p.input_spikes_per_patch <= 0.3 * p.thermometer_input_spikes_per_patch
    assert p.projected_patches_per_s <= min(p.compute_patches_per_s, p.host_link_patches_per_s)
    assert p.projected_patches_per_s <= p.step_patches_per_s == 1000 * p.copies
    # The busiest core cannot take a patch per 1 ms step at 5k events/ms: compute binds below the step.
    assert p.busiest_core["events_per_patch_p99"] > p.events_per_ms_per_core
    assert p.compute_patches_per_s < p.step_patches_per_s
    assert p.input_bytes_per_patch == pytest.approx(p.input_spikes_per_patch * p.link_bytes_per_spike, 0.01)
    assert p.energy_per_patch_j > 0 and p.energy_per_km2_j > 0
    shared, own = p.shared_input or {}, (p.layouts or {})["per-copy input"]
    assert shared["host_link_bytes_per_km2"] < own["host_link_bytes_per_km2"]
    assert shared["input_share_limit"] <= shared["input_share_per_copy"] < 1
    # Fewer input cores, but trees' block makes conv1 cores heavier: SDRAM places fewer copies there.
    assert shared["copies"] >= own["copies"] or "SDRAM" in shared["limited_by"]
    assert shared["application_cores"] <= p.application_cores
    assert own["copies"] == min(own["copies_by_cores"], own["copies_by_sdram"]) and p.sdram_bytes_per_copy > 0
    # The headline is the layout projecting the most; strips send each pixel about once (issue 14 item 1).
    assert p.projected_patches_per_s == max(v["projected_patches_per_s"] for v in (p.layouts or {}).values())
    strip = p.strip_input or {}
    assert strip["host_link_bytes_per_km2"] < shared["host_link_bytes_per_km2"]
    assert strip["input_share_limit"] <= strip["input_share_per_copy"] < shared["input_share_per_copy"]
    assert strip["measured_on_scene_strips"]["share"] < 0.35, strip["measured_on_scene_strips"]
    assert strip["projected_patches_per_s"] <= min(strip["compute_patches_per_s"],
                                                   strip["host_link_patches_per_s"])
    # Measured on squares of neighbouring chips: one time slot per square, ~0.56 of the unshared spikes.
    measured = shared["measured_on_block_squares"]
    assert measured["time_slots_per_square"] == 1.0 and 0.5 < measured["share"] < 0.6, measured
    want = own["input_spikes_per_patch"] * measured["share"]
    assert shared["input_spikes_per_patch"] == pytest.approx(want, 0.01)
    assert shared["projected_patches_per_s"] <= min(shared["compute_patches_per_s"],
                                                    shared["host_link_patches_per_s"])


def test_shared_block_windows_are_each_copys_patch() -> None:
    """Each copy's re-indexed first-layer rows read exactly its own patch out of its block's input."""
    import numpy as np

    from models.pynn_net import describe
    from tests.models.test_pynn_net import CONV, _package
    from workers.spinnaker.shared_input import block_for

    net = describe(_package(CONV, 10, 2, 0))
    block = block_for(net, 10, 2)
    assert block.shape == (15, 15, 6) and block.copies == 4
    scene = np.random.default_rng(0).random(block.shape)  # one value per block input neuron
    for slot in range(4):
        dy, dx = block.origin(slot)
        patch = scene[dy : dy + 10, dx : dx + 10].reshape(-1)
        np.testing.assert_array_equal(scene.reshape(-1)[block.remap(np.arange(patch.size), slot)], patch)


def test_core_events_are_synapses_of_neurons_that_fired() -> None:
    import numpy as np

    from models.pynn_net import CLOCK, describe
    from tests.models.test_pynn_net import CONV, _package
    from workers.spinnaker.load import core_events

    net = describe(_package(CONV, 10, 2, 0))
    rng = np.random.default_rng(3)
    spikes = {p.name: (rng.random((5, p.size)) < 0.3).astype(np.float32) for p in net.populations}
    spikes[CLOCK] = np.ones((5, 1), np.float32)
    got = core_events(net, "c2", spikes).sum(axis=1)
    want = np.zeros(5)
    for proj in net.projections:
        if proj.post == "c2":
            for pre in proj.rows[:, 0].astype(int):  # one event per synapse whose pre-neuron fired
                want += spikes[proj.pre][:, pre]
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_board_quantiser_equals_spynnakers_own_weights_where_it_rounds(tmp_path: Path) -> None:
    """``models.board`` (the card's ``board_class_agreement``) against the weights sPyNNaker really builds,
    on a network whose input sums pass 2**9 so the board rounds (every weight of the landcover model x63:
    odd multiples of 1/64 on steps of 1/32). Measured: identical to the last bit, ~200 s."""
    import numpy as np

    from models import board, package
    from spikescan.config import Settings
    from workers.spinnaker.board_weights import read_back

    shipped = package.load("landcover-landsat")
    big = package.save(shipped.card, {k: v * 63 for k, v in shipped.weights.items()}, tmp_path / "x63")
    assert max(board.receptor_steps(board.describe(big)).values()) > big.card.fixed_point.weight_step
    got = read_back(big, Settings(data_dir=tmp_path / "data"))
    ours = board.board_values(big)
    step = big.card.fixed_point.weight_step
    assert any(np.abs(got[k] - big.weights[k] * step).max() > 0 for k in got)  # the board did round
    for key in got:
        np.testing.assert_array_equal(ours[key], got[key], err_msg=key)


def test_board_stand_in_rounds_what_spynnaker_holds(tmp_path: Path) -> None:
    """models/board.py against sPyNNaker's own build, fast: a package grid (2**-12) finer than the steps the
    board picks for these weights (2**-11 .. 2**-9), so the board rounds, the one-hot first layer on its
    cumulative weights."""
    import numpy as np

    from models import board, package
    from spikescan.config import Settings
    from tests.models.test_pynn_net import CONV, _package
    from workers.spinnaker.board_weights import read_back

    small = _package(CONV, 10, 2, 0)
    rng = np.random.default_rng(7)
    card = small.card.model_copy(update={"fixed_point": small.card.fixed_point.model_copy(
        update={"weight_step": 2.0**-12})})
    weights = {k: rng.integers(-20000, 20001, v.shape).astype(np.int32) for k, v in small.weights.items()}
    pkg = package.save(card, weights, tmp_path / "pkg")
    assert min(board.receptor_steps(board.describe(pkg)).values()) > 2.0**-12  # the board rounds
    held = read_back(pkg, Settings(data_dir=tmp_path / "data"))
    ours = board.board_values(pkg)
    for key, value in held.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    assert any(not np.array_equal(ours[k], weights[k] * 2.0**-12) for k in weights)


@pytest.mark.parametrize(("shared_side", "strip_copies"), [(0, 0), (2, 0), (0, 3)])
def test_sdram_per_core_is_what_spynnaker_reserves(shared_side: int, strip_copies: int, tmp_path: Path
                                                   ) -> None:
    """The planner's synaptic-matrix bytes per core (``workers/spinnaker/sdram.py``) equal what sPyNNaker's
    own resource estimate reserves on a virtual-board mapping, byte for byte, with and without a shared input
    block; the rest of each core fits the planner's allowance. A small network: seconds, not minutes."""
    from models import package
    from models.pynn_net import describe
    from spikescan.config import Settings
    from tests.models.test_pynn_net import CONV, _package
    from workers.spinnaker import sdram
    from workers.spinnaker.planner import map_copies
    from workers.spinnaker.shared_input import block_for
    from workers.spinnaker.strip_input import strip_for

    small = _package(CONV, 10, 2, 0)
    pkg = package.save(small.card, small.weights, tmp_path / "pkg")
    net = describe(pkg)
    block = block_for(net, 10, 2).size if shared_side else 0
    strip = strip_for(net, 10, strip_copies) if strip_copies else None
    result = map_copies(pkg, 4, 1, Settings(data_dir=tmp_path / "data"), shared_side, strip_copies)
    assert result["ok"], result
    got = result["sdram"]
    assert got["chip_bytes"] == sdram.CHIP_BYTES
    planned = sdram.core_bytes(net, block, strip)
    assert set(got["max_core_synapse_bytes_by_population"]) == set(planned)
    for name, synapses in got["max_core_synapse_bytes_by_population"].items():
        assert planned[name] - sdram.CORE_OTHER_BYTES == synapses, name
        assert got["max_core_bytes_by_population"][name] <= planned[name], name


def test_board_geometry_is_spinn_machines_virtual_spinn5() -> None:
    """The placement replay's chips and cores per chip are sPyNNaker's virtual SpiNN-5 board's."""
    from spinn_machine.virtual_machine import virtual_machine
    from spinn_utilities.config_holder import set_config
    from spynnaker.pyNN.config_setup import unittest_setup

    from workers.spinnaker import sdram
    from workers.spinnaker.planner import APP_CORES_PER_BOARD

    unittest_setup()
    set_config("Machine", "version", "5")
    machine = virtual_machine(8, 8)
    chips = [(x, y) for x in range(8) for y in range(8) if machine.get_chip_at(x, y)]
    assert chips == sdram._BOARD_CHIPS
    # Placeable cores less one system core per chip, and the Ethernet chip's packet gatherer.
    want = [machine.get_chip_at(x, y).n_placable_processors - 1 - ((x, y) == (0, 0)) for x, y in chips]
    assert want == sdram.APP_CORES_BY_CHIP and sum(want) == APP_CORES_PER_BOARD


@pytest.mark.parametrize("model", ["landcover-landsat", "trees-rgb"])
def test_planner_copies_count_cores_and_sdram(model: str) -> None:
    """Copies are the least of the core and SDRAM limits as placed together; the shared layout of trees-rgb
    is the case where SDRAM binds (its conv1 cores need ~21 MB each; sPyNNaker places 5, the slow --map
    test confirms)."""
    from models import package
    from models.pynn_net import describe
    from workers.spinnaker import sdram
    from workers.spinnaker.planner import APP_CORES_PER_BOARD, SHARED_SIDE, cores_by_population, sdram_fit
    from workers.spinnaker.shared_input import block_for

    pkg = package.load(model)
    net = describe(pkg)
    by_cores = (APP_CORES_PER_BOARD - 1) // sum(cores_by_population(net).values())
    fit = sdram_fit(sdram.Layout.of(net), by_cores, 1)
    assert fit["copies"] == min(by_cores, fit["copies_by_sdram"]) == by_cores  # cores bind unshared
    assert fit["sdram_bytes_per_copy"] > 0 and fit["limited_by"].startswith("cores")
    block = block_for(net, pkg.card.patch_size, SHARED_SIDE)
    shared = sdram_fit(sdram.Layout.of(net, block.copies, block.size), by_cores + 1, 1)
    if model == "trees-rgb":
        assert shared["copies"] == 5 and "SDRAM" in shared["limited_by"], shared
    else:
        assert shared["copies"] == by_cores + 1 and shared["limited_by"].startswith("cores"), shared


def test_strip_maps_with_live_injectors_and_16_bit_keys(tmp_path: Path) -> None:
    """The strip's input as sPyNNaker SpikeInjector populations (live injection) maps on a virtual board:
    one core per piece (LiveEventConnection sends a label's events to its first core only) and each core's
    key prefix the upper half-word over a routing key whose low 16 bits are free, so 16-bit atom ids are
    what the connection would send. A small network: seconds."""
    from models import package
    from tests.models.test_pynn_net import CONV, _package
    from workers.spinnaker.workspace import Workspace

    small = _package(CONV, 10, 2, 0)
    pkg = package.save(small.card, small.weights, tmp_path / "pkg")
    result = Workspace(tmp_path / "spinnaker").run_child(
        "workers.spinnaker.mapping",
        ["--model", str(pkg.path), "--copies", "4", "--strip", "3", "--live"],
        timeout_s=600,
    )
    assert result["ok"], result
    live = result["live_input"]
    assert live["populations"] == 2 * 4 and live["one_core_each"], live  # two strips of (3 + 1) pieces
    assert live["keys_16_bit_with_prefix"] and live["cores"][0]["prefix_type"] == "UPPER_HALF_WORD"
    assert live["unread_populations"] == 2  # the short strip (one copy) reads 2 of its 4 pieces; no key


def test_placement_replay_is_spynnakers_placer(tmp_path: Path) -> None:
    """``sdram.place`` replays sPyNNaker's ApplicationPlacer: given the cores sPyNNaker itself sized, it puts
    every population's cores on the chips sPyNNaker chose. The case is trees-rgb in strips of 6 at 7 copies,
    where a first fit of cores (the planner before) refused the 7th copy that sPyNNaker places. With the
    planner's own per-core bytes the replay places 7 and refuses 8, as sPyNNaker does (slow --map test)."""
    from models import package
    from models.pynn_net import describe
    from spikescan.config import Settings
    from workers.spinnaker import sdram
    from workers.spinnaker.planner import fit_strip_copies, map_copies

    pkg = package.load("trees-rgb")
    result = map_copies(pkg, 7, 1, Settings(data_dir=tmp_path / "data"), 0, 6)
    assert result["ok"], result
    placed = result["placement"]
    system = [placed["system_bytes_by_chip"][f"{x},{y}"] for x, y in sdram._BOARD_CHIPS]
    assert system == sdram.SYSTEM_BYTES_BY_CHIP
    placer = sdram._Placer(1, count_cores=True)
    for label, cores in placed["vertices"]:
        before = list(placer.used)
        placer.place([need for _, _, need in cores])
        chips = enumerate(sdram._BOARD_CHIPS)
        got = sorted((xy, placer.used[i] - before[i]) for i, xy in chips if placer.used[i] != before[i])
        want: dict[tuple[int, int], int] = {}
        for x, y, need in cores:
            want[x, y] = want.get((x, y), 0) + need
        assert got == sorted(want.items()), label
    assert fit_strip_copies(describe(pkg), pkg.card.patch_size, 1, 6) == 7

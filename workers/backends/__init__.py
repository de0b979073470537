"""Inference backends behind one interface (``base.Backend``), declared once in ``REGISTRY``.

Each entry says what the backend is and can do; the command line's ``--backend`` choices, the start-up
availability check, ``get_backend`` and the conformance suite (tests/workers/test_backend_conformance.py) all
read it, so a new backend is one entry here plus its module. Factories import their module only when called:
NEST, sPyNNaker and onnxruntime are heavy, and optional.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from models.package import ModelPackage
from spikescan.config import Settings
from spikescan.errors import BackendUnavailable, InvalidInput
from workers.backends.base import Backend, BatchResult

__all__ = [
    "NAMES",
    "REGISTRY",
    "Backend",
    "BackendSpec",
    "BatchResult",
    "backend_names",
    "check_available",
    "get_backend",
    "unavailable_reason",
]


@dataclass(frozen=True)
class BackendSpec:
    name: str
    summary: str
    factory: Callable[[ModelPackage, Settings | None], Backend]
    # None when this machine can run it, else why not (checked at start-up, before the first chip).
    availability: Callable[[Settings], str | None]
    exact: bool  # computes the emulator's spikes exactly (the conformance suite holds it to that)
    layer_spikes: bool  # reports every layer's spikes (``layer_spikes``/``decode``): crosscheck can use it
    empty_batch: bool  # accepts a batch of zero chips
    cli: bool = True  # offered as ``--backend``; False: a variant for tests and benchmarks
    # How its input spikes are counted: the thermometer code (every level a pixel-band passes) or one spike
    # per pixel-band on its level (``models.encoding.encode_onehot``; the PyNN network where it is exact).
    input_code: Literal["thermometer", "onehot"] = "thermometer"
    # What it cannot do on this kind of machine, said up front rather than found at the first chip.
    limits: str = ""


def _emulator(int8: bool, engine: str | None = None) -> Callable[[ModelPackage, Settings | None], Backend]:
    """``engine`` None: the settings' ``int8_engine``."""

    def make(package: ModelPackage, settings: Settings | None) -> Backend:
        from workers.backends.emulator import EmulatorBackend

        # A worker's CPU share (SPIKESCAN_THREADS): the int8 engine's intra-op pool is sized to it, not to
        # the node's cores, so that N pods on one node do not each start a pool of all its cores.
        threads = settings.threads if settings else 1
        chosen = engine or (settings.int8_engine if settings else "auto")
        return EmulatorBackend(package, int8=int8, threads=threads, engine=chosen)

    return make


def _nest(package: ModelPackage, settings: Settings | None) -> Backend:
    from workers.backends.nest import NestBackend

    return NestBackend(package)


def _spinnaker(package: ModelPackage, settings: Settings | None) -> Backend:
    from workers.backends.spinnaker import SpinnakerBackend

    return SpinnakerBackend(package, settings)


def _always(settings: Settings) -> str | None:
    return None


def _installed(*modules: str, extra: str | None, backend: str) -> Callable[[Settings], str | None]:
    """``extra`` None: the modules are spikescan's own dependencies, left out of this install."""

    def check(settings: Settings) -> str | None:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing and extra is None:
            module = missing[0]
            return f"backend '{backend}' needs {module}, a dependency of spikescan (pip install {module})"
        if missing:
            install = f"pip install 'spikescan[{extra}]'"
            return f"backend '{backend}' needs the {extra} extra ({install}): no module {missing[0]}"
        return None

    return check


def _board(settings: Settings) -> str | None:
    from workers.backends.spinnaker import board_config

    try:
        board_config(settings)
    except BackendUnavailable as exc:
        return exc.message
    return _installed("spynnaker", extra="spinnaker", backend="spinnaker")(settings)


REGISTRY: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "emulator",
            "exact CPU emulator: int8 graph where its bounds are proven, else its own integer kernels",
            _emulator(int8=True),
            _always,
            exact=True,
            layer_spikes=False,
            empty_batch=True,
        ),
        BackendSpec(
            "emulator-onnxruntime",
            "the emulator's int8 graph on onnxruntime (QLinearConv, AVX-512 VNNI / AVX2 kernels)",
            _emulator(int8=True, engine="onnxruntime"),
            _installed("onnxruntime", "onnx", extra=None, backend="emulator-onnxruntime"),
            exact=True,
            layer_spikes=False,
            empty_batch=True,
            cli=False,
        ),
        BackendSpec(
            "emulator-openvino",
            "the emulator's int8 graph on OpenVINO (oneDNN; AMX tiles where the CPU has them)",
            _emulator(int8=True, engine="openvino"),
            _installed("openvino", extra=None, backend="emulator-openvino"),
            exact=True,
            layer_spikes=False,
            empty_batch=True,
            cli=False,
        ),
        BackendSpec(
            "emulator-fallback",
            "the emulator's own numba kernels only (the int8 path's reference)",
            _emulator(int8=False),
            _always,
            exact=True,
            layer_spikes=False,
            empty_batch=True,
            cli=False,
        ),
        BackendSpec(
            "nest",
            "the PyNN network on the NEST simulator, an independent check",
            _nest,
            _installed("nest", "pyNN", extra="nest", backend="nest"),
            exact=True,
            layer_spikes=True,
            empty_batch=False,
            input_code="onehot",
            limits="a simulator, ~100x slower than the emulator; batches follow each other in simulated time",
        ),
        BackendSpec(
            "spinnaker",
            "tiled copies on a SpiNNaker board through sPyNNaker",
            _spinnaker,
            _board,
            exact=True,
            layer_spikes=True,
            empty_batch=False,
            input_code="onehot",
            limits="needs a board or spalloc server; a virtual board maps and loads but runs no spikes",
        ),
    )
}

NAMES = tuple(name for name, spec in REGISTRY.items() if spec.cli)


def backend_names(*, layer_spikes: bool = False, include_variants: bool = False) -> list[str]:
    """Backend names for ``--backend`` choices: the command-line ones, or only those reporting per-layer
    spikes (the crosscheck's), or every registered one (``include_variants``)."""
    return [
        name
        for name, spec in REGISTRY.items()
        if (spec.cli or include_variants) and (spec.layer_spikes or not layer_spikes)
    ]


def _spec(name: str) -> BackendSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInput(f"unknown backend {name!r} (choose from {', '.join(NAMES)})") from None


def unavailable_reason(name: str, settings: Settings) -> str | None:
    """None when ``name`` can run here, else the one-line reason it cannot."""
    return _spec(name).availability(settings)


def check_available(name: str | None, settings: Settings) -> None:
    """Refuse at start-up, not at the first chip, a backend this machine cannot run (no board configured,
    an optional extra not installed)."""
    reason = unavailable_reason(name or settings.backend, settings)
    if reason is not None:
        raise BackendUnavailable(reason)


def get_backend(name: str | None, package: ModelPackage, settings: Settings | None = None) -> Backend:
    """A ready backend for ``package``; ``name`` None means ``settings.backend`` (default ``emulator``)."""
    return _spec(name or (settings.backend if settings else "emulator")).factory(package, settings)

"""Inference backends behind one interface (``base.Backend``); ``get_backend`` picks one by name."""

from __future__ import annotations

from models.package import ModelPackage
from spikescan.config import Settings
from spikescan.errors import InvalidInput
from workers.backends.base import Backend, BatchResult

NAMES = ("emulator", "spinnaker", "nest")

__all__ = ["NAMES", "Backend", "BatchResult", "check_available", "get_backend"]


def check_available(name: str | None, settings: Settings) -> None:
    """Refuse at start-up, not at the first chip, a backend this machine cannot run (no board configured)."""
    if (name or settings.backend) == "spinnaker":
        from workers.backends.spinnaker import board_config

        board_config(settings)


def get_backend(name: str | None, package: ModelPackage, settings: Settings | None = None) -> Backend:
    """A ready backend for ``package``; ``name`` None means ``settings.backend`` (default ``emulator``)."""
    chosen = name or (settings.backend if settings else "emulator")
    if chosen == "emulator":
        from workers.backends.emulator import EmulatorBackend

        return EmulatorBackend(package)
    if chosen == "spinnaker":
        from workers.backends.spinnaker import SpinnakerBackend

        return SpinnakerBackend(package, settings)
    if chosen == "nest":
        from workers.backends.nest import NestBackend

        return NestBackend(package)
    raise InvalidInput(f"unknown backend {chosen!r} (choose from {', '.join(NAMES)})")

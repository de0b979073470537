"""A sPyNNaker workspace the project owns: its config files, its reports, its HOME.

sPyNNaker reads ``~/.spynnaker.cfg`` (and writes a template there, then fails, when it is missing) and then
``./spynnaker.cfg``; it also writes report folders into the working directory. So every sPyNNaker run happens
in a child process whose HOME and working directory are folders under ``<data_dir>/spinnaker`` that this
module writes: the user's home is never read or written, and two runs never share global simulator state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikescan.config import Settings
from spikescan.errors import BackendUnavailable

VIRTUAL_BOARD_CFG = """[Machine]
virtual_board = True
version = 5

[Mode]
mode = Production
"""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> Workspace:
        return cls(settings.data_dir / "spinnaker")

    def prepare(self, cfg: str = VIRTUAL_BOARD_CFG) -> None:
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        for path in (self.root / "home" / ".spynnaker.cfg", self.root / "run" / "spynnaker.cfg"):
            if not path.is_file() or path.read_text() != cfg:
                path.write_text(cfg)

    def run_child(self, module: str, args: list[str], timeout_s: float) -> dict[str, Any]:
        """Run ``python -m module args`` in the workspace; it prints one JSON object on its last line."""
        self.prepare()
        env = {**os.environ, "HOME": str(self.root / "home")}
        try:
            done = subprocess.run(
                [sys.executable, "-m", module, *args],
                cwd=self.root / "run",
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(
                f"sPyNNaker mapping took longer than {timeout_s:.0f} s and was stopped"
            ) from None
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BackendUnavailable(f"sPyNNaker mapping failed: {tail}")
        return json.loads(lines[-1])  # type: ignore[no-any-return]

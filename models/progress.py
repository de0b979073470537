"""Training progress a person or a script can follow: one line per epoch (float or sharpening) with an ETA.

Human lines go to stderr so stdout stays clean; ``as_json`` prints one JSON object per line on stdout
instead (``{"event": "epoch", ...}``), for scripts. The ETA is the mean epoch time so far times the epochs
left in the current plan (``total``, which ``models.train.fit`` lowers when early stopping ends the float
phase).
"""

from __future__ import annotations

import json
import sys
import time

import keras


def _clock(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 60}m{seconds % 60:02d}s"


class EpochProgress(keras.callbacks.Callback):
    def __init__(self, total: int, as_json: bool = False) -> None:
        super().__init__()
        self.total, self.as_json = total, as_json
        self.phase = "setup"
        self.started = time.monotonic()
        self.epoch_times: list[float] = []
        self._epoch_start = self.started

    def stage(self, text: str) -> None:
        self.phase = text
        self._emit({"event": "stage", "stage": text}, f"spikescan train: {text}")

    def event(self, payload: dict[str, object], line: str) -> None:
        self._emit(payload, line)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_times.append(time.monotonic() - self._epoch_start)
        done = epoch + 1
        eta = sum(self.epoch_times) / len(self.epoch_times) * max(self.total - done, 0)
        logs = logs or {}
        values = {k: round(float(v), 4) for k, v in logs.items() if k in ("loss", "val_loss", "sharpness")}
        shown = " ".join(f"{k} {v:.3f}" for k, v in values.items())
        phase = "sharpening" if float(logs.get("sharpness", 0.0)) > 0 else self.phase
        self._emit({"event": "epoch", "epoch": done, "of": self.total, "phase": phase, **values,
                    "eta_s": round(eta, 1)},
                   f"epoch {done}/{self.total} {phase}: {shown}  ETA {_clock(eta)}")

    def _emit(self, payload: dict[str, object], line: str) -> None:
        if self.as_json:
            print(json.dumps({"elapsed_s": round(time.monotonic() - self.started, 1), **payload}), flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

"""Per-chip inference results in the job's storage (``workers.objectstore``), read back by chip row for the
mosaicker.

Layout: ``<chips prefix>/r<row>/<digest>.npz`` (locally ``<job dir>/chips/…``), one object per chip row of
each batch an inference worker finished, holding the arrays of ``workers.mosaic.ChipResult`` stacked
(``chip`` [n, 5] = row, col, x, y, size; the scores as a palette of distinct vectors and an index per cell,
deflated for a bucket — ``_pack_scores``; ``cell_valid``; ``spikes``). One object
per chip would cost a file creation (or a PUT) per chip, which on shared filesystems and object stores is
slower than the inference itself.

Idempotent by construction: the name is a digest of the chip ids it holds, so a redelivered batch rewrites
the same object with the same bytes, and a chip redelivered in a *different* batch is simply read twice and
kept once (results are deterministic). Objects are written whole (a rename locally, one PUT to a bucket), so a
reader sees a whole object or none. Only chips that Redis counts as done are read back (``load_row``'s
``done``), so an object from an attempt that was later dead-lettered never enters the mosaic.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from numba import njit

from models.package import read_npz
from spikescan.errors import writing
from workers.chips import Chip
from workers.mosaic import ChipResult
from workers.objectstore import LocalStore, ObjectStore


@dataclass(frozen=True)
class ChipSet:
    """Where one job's chip results live: a store and the key prefix of the job's chips (``…/chips/``)."""

    objects: ObjectStore
    prefix: str

    def delete(self) -> None:
        self.objects.delete_prefix(self.prefix)


def _chipset(where: ChipSet | Path) -> ChipSet:
    # A plain directory (the in-process tests, the old call sites) is a local store rooted there.
    return where if isinstance(where, ChipSet) else ChipSet(LocalStore(where), "")


def store(where: ChipSet | Path, results: list[ChipResult]) -> list[PurePosixPath]:
    """Store one batch's results, one object per chip row; returns their keys."""
    chips = _chipset(where)
    by_row: dict[int, list[ChipResult]] = defaultdict(list)
    for r in results:
        by_row[r.chip.row].append(r)
    root = chips.objects.local_root
    with writing(root / chips.prefix if root is not None else Path(".")):
        return [_write_row(chips, row, group) for row, group in sorted(by_row.items())]


def _write_row(chips: ChipSet, row: int, group: list[ChipResult]) -> PurePosixPath:
    name, data = row_object(group, deflate=chips.objects.local_root is None)
    key = f"{chips.prefix}r{row}/{name}.npz"
    chips.objects.put_bytes(key, data)
    return PurePosixPath(key)


def row_object(group: list[ChipResult], deflate: bool) -> tuple[str, bytes]:
    """(name, bytes) of the object holding ``group`` (results of one chip row): the name a digest of the chip
    ids, the bytes an npz archive, scores deflated for a bucket (``_pack_scores``)."""
    group = sorted(group, key=lambda r: r.chip.col)
    name = hashlib.sha256(",".join(r.chip.id for r in group).encode()).hexdigest()[:24]
    # Built in memory and written in one call: numpy writing the archive to the file itself costs a dozen
    # small writes and seeks, which on a busy volume take longer than building the archive.
    buf = io.BytesIO()
    np.savez(
        buf,
        chip=np.array([[c.row, c.col, c.x, c.y, c.size] for c in (r.chip for r in group)]),
        **_pack_scores(np.stack([r.scores for r in group]).astype(np.float32, copy=False), deflate=deflate),
        cell_valid=np.stack([r.cell_valid for r in group]),
        spikes=np.array([r.spikes for r in group], np.int64),
    )
    return name, buf.getvalue()


def _pack_scores(scores: np.ndarray, deflate: bool = True) -> dict[str, np.ndarray]:
    """Scores as a palette of the distinct score vectors and each cell's index into it, losslessly.

    A spiking model's cell scores are a softmax of small integer class counts, so a batch holds a few hundred
    distinct vectors: the index is 1-2 bytes a cell against 4 per class (a land-cover chip 7.2 → 0.5 kB).
    Writing, and the mosaicker reading back, the float32 scores was most of the service's per-chip cost
    (``bench service``). Distinct vectors are found by their exact bits; a backend whose scores are not few
    keeps the floats. For a bucket the arrays are also deflated (level 1: a PUT's bytes cost more than the
    CPU)."""
    packed = _palette(scores)
    if packed is None:
        packed = {"scores": scores}
    if not deflate:
        return packed
    out: dict[str, np.ndarray] = {}
    for name, arr in packed.items():
        out[name + "_deflated"] = np.frombuffer(zlib.compress(arr.tobytes(), 1), np.uint8)
        out[name + "_shape"] = np.array(arr.shape, np.int64)
        out[name + "_dtype"] = np.array(arr.dtype.str)
    return out


def _palette(scores: np.ndarray) -> dict[str, np.ndarray] | None:
    flat = np.ascontiguousarray(scores, np.float32).reshape(-1, scores.shape[-1])
    if flat.shape[0] == 0:
        return None
    index = np.empty(len(flat), np.uint32)
    firsts = _distinct_rows(flat.view(np.uint32), index)
    if len(firsts) > _MAX_PALETTE:  # not a spiking model's few score vectors: the floats are smaller
        return None
    palette = flat[firsts]
    narrow = np.uint8 if len(firsts) <= 256 else np.uint16
    return {"score_palette": palette, "score_index": index.astype(narrow).reshape(scores.shape[:-1])}


_MAX_PALETTE = 65536


@njit(cache=True, nogil=True)
def _distinct_rows(bits: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows of ``bits`` [M, C] numbered by first appearance (``index`` [M]); returns each number's first row.
    An open-addressing hash table keyed by the row's bits, compared whole: exact, whatever the hash does."""
    m, c = bits.shape
    size = 1
    while size < 2 * m:
        size *= 2
    slots = np.full(size, -1, np.int64)  # row that owns the slot
    firsts = np.empty(m, np.int64)
    n = 0
    for i in range(m):
        h = np.uint64(1469598103934665603)
        for j in range(c):
            h = (h ^ np.uint64(bits[i, j])) * np.uint64(1099511628211)
        s = np.int64(h & np.uint64(size - 1))
        while True:
            owner = slots[s]
            if owner < 0:
                slots[s] = i
                index[i] = n
                firsts[n] = i
                n += 1
                break
            same = True
            for j in range(c):
                if bits[owner, j] != bits[i, j]:
                    same = False
                    break
            if same:
                index[i] = index[owner]
                break
            s = (s + 1) & (size - 1)
    return firsts[:n]


def _unpack_scores(z: dict[str, np.ndarray]) -> np.ndarray:
    arrays = dict(z)
    for name in ("score_palette", "score_index", "scores"):
        if name + "_deflated" in arrays:
            # Objects written before the palette have no dtype entry: what they deflated is float32 scores.
            dtype = np.dtype(str(arrays[name + "_dtype"])) if name + "_dtype" in arrays else np.float32
            shape = tuple(int(v) for v in arrays[name + "_shape"])
            raw = zlib.decompress(arrays[name + "_deflated"].tobytes())
            arrays[name] = np.frombuffer(raw, dtype).reshape(shape)
    if "score_index" in arrays:
        return arrays["score_palette"][arrays["score_index"]]
    return arrays["scores"]  # the floats themselves: a palette did not pay, or a job that spans an upgrade


def load_row(
    where: ChipSet | Path,
    row: int,
    done: set[str] | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[ChipResult]:
    """Stored results of chip row ``row``, each chip once, in column order: those in ``done`` (the chips
    counted done), or — ``done`` None, for a row whose every chip is counted done or failed — all but those
    in ``skip`` (the failed ones)."""
    chips = _chipset(where)
    found: dict[str, ChipResult] = {}
    for key in chips.objects.names(f"{chips.prefix}r{row}/"):
        if not key.endswith(".npz"):
            continue
        # One read of the whole object (then parsed in memory); thread-safe: the API reads chip results from
        # several request threads.
        data = chips.objects.get_bytes(key)
        if data is None:
            # Removed under us (the job finished or was deleted while a preview tile read it). The mosaicker
            # counts what it loaded against what Redis says is done, so a loss cannot pass there unnoticed.
            continue
        z = read_npz(io.BytesIO(data))
        chip_rows, scores, valid, spikes = z["chip"], _unpack_scores(z), z["cell_valid"], z["spikes"]
        for i, (r, c, x, y, size) in enumerate(chip_rows.tolist()):
            chip = Chip(r, c, x, y, size)
            if (chip.id in done if done is not None else chip.id not in skip) and chip.id not in found:
                found[chip.id] = ChipResult(chip, scores[i], valid[i], int(spikes[i]))
    return sorted(found.values(), key=lambda res: res.chip.col)

"""The model card: every field of ``model.json``, validated.

A package is ``model.json`` (this card) plus ``weights.npz``. Weights are stored as integers on a fixed-point
grid (``fixed_point.weight_step``); the float weight is ``q * weight_step`` exactly. That grid makes the
emulator bit-exact with Keras: every partial sum of binary inputs times grid weights is a multiple of the step
well inside float32's exact range, so any summation order gives the same number and the same spike.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT = "spikescan-model/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Strict):
    name: str  # e.g. "red"; matched against scene band descriptions and colour interpretation
    description: str = ""
    # STAC eo common name where one exists (red, green, blue, nir, swir16, ...)
    common_name: str | None = None


class Encoding(_Strict):
    """Pixels → spikes: per band, K thresholds in raw pixel units; bit k fires iff value >= thresholds[k]."""

    kind: Literal["thermometer"] = "thermometer"
    levels: int = Field(ge=1, le=64)
    thresholds: list[list[float]]  # [band][level], ascending

    @model_validator(mode="after")
    def _check(self) -> Encoding:
        for row in self.thresholds:
            if len(row) != self.levels:
                raise ValueError("each band needs exactly `levels` thresholds")
            if any(b < a for a, b in zip(row, row[1:], strict=False)):
                raise ValueError("thresholds must be ascending")
        return self


class Layer(_Strict):
    """One layer of the spiking network. Every layer's neurons are binary (fire iff W·x + b >= 0.5)."""

    name: str
    kind: Literal["conv2d", "dense", "maxpool", "flatten"]
    filters: int | None = None  # conv2d
    units: int | None = None  # dense
    kernel: int = 1
    stride: int = 1
    padding: Literal["same", "valid"] = "valid"

    @property
    def has_weights(self) -> bool:
        return self.kind in ("conv2d", "dense")


class PopulationCode(_Strict):
    """N-hot output: output neuron i belongs to class ``owner[i]``; a class's score counts its spikes."""

    neurons_per_class: int = Field(ge=1)
    owner: list[int]
    # Scores are softmax(beta * spike counts per class); beta was fixed during training.
    beta: float = Field(gt=0)


class FixedPoint(_Strict):
    weight_step: float = Field(gt=0)  # a power of two
    threshold: float = 0.5


class Detection(_Strict):
    """How a detector's score map becomes one box per object (``models.tasks.peaks``): the target classes'
    scores are summed into an object score, smoothed (``sigma_cells``), and every local maximum of at least
    ``min_score`` is an object; its box side is the score-weighted mean of the target classes' ``sides_m``;
    boxes overlapping a better one at IoU > ``nms_iou`` are suppressed. ``label`` is the features' class
    (default: the first target class). ``min_score`` and ``nms_iou`` can be overridden per run."""

    sides_m: list[float] = Field(default_factory=list)  # one per target class, metres
    sigma_cells: float = Field(default=1.0, ge=0)
    min_score: float = Field(default=0.3, ge=0, le=1)
    nms_iou: float = Field(default=0.3, ge=0, le=1)
    peak_radius: int = Field(default=1, ge=1)
    label: str | None = None


class Normalisation(_Strict):
    """Colour normalisation before the spike encoding (``models.normalisation``): ``none``, or
    ``scene_standardise`` — every band shifted and scaled by statistics of the whole scene's valid pixels
    (the pipeline reads them from a decimated overview before the first chip), so the encoding thresholds
    are in standardised units and another site's exposure or colour cast does not move them."""

    kind: Literal["none", "scene_standardise"] = "none"


class ModelCard(_Strict):
    format: Literal["spikescan-model/1"] = FORMAT
    name: str
    version: str
    task: Literal["detection", "segmentation", "classification"]
    summary: str = ""
    classes: list[str]
    colors: list[list[int]]  # RGBA per class, for the colour table
    target_classes: list[str] = Field(default_factory=list)
    bands: list[Band]
    gsd_m: float = Field(gt=0)
    patch_size: int = Field(ge=4)
    output_stride: int = Field(ge=1)  # model pixels per output cell
    encoding: Encoding
    layers: list[Layer]
    population_code: PopulationCode
    fixed_point: FixedPoint
    detection: Detection = Detection()
    normalisation: Normalisation = Normalisation()
    # Output cells closer than this to a chip's border see zero padding; the mosaic weights them down and
    # the default stride keeps every cell away from a border in at least one chip.
    receptive_field_px: int = 0
    # sha256 of weights.npz: a weight file changed after packaging is refused.
    weights_sha256: str = ""
    training: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelCard:
        if len(self.colors) != len(self.classes):
            raise ValueError("one colour per class")
        unknown = set(self.target_classes) - set(self.classes)
        if unknown:
            raise ValueError(f"target classes not among classes: {sorted(unknown)}")
        if self.task == "detection" and len(self.detection.sides_m) != len(self.target_classes):
            raise ValueError("detection.sides_m needs one box side per target class")
        if len(self.encoding.thresholds) != len(self.bands):
            raise ValueError("encoding needs one threshold row per band")
        if self.patch_size % self.output_stride:
            raise ValueError("patch_size must be a multiple of output_stride")
        pc = self.population_code
        if len(pc.owner) != pc.neurons_per_class * len(self.classes):
            raise ValueError("population code must give every class neurons_per_class neurons")
        if sorted(set(pc.owner)) != list(range(len(self.classes))):
            raise ValueError("population code owners must be class indices")
        return self

    @property
    def input_channels(self) -> int:
        return len(self.bands) * self.encoding.levels

    @property
    def output_cells(self) -> int:
        return self.patch_size // self.output_stride

    def class_index(self, name: str) -> int:
        return self.classes.index(name)

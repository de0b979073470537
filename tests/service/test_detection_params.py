"""A detector's peak picking is set per job: ``min_score`` and ``nms_iou`` over HTTP give the boxes that
``spikescan predict --min-score/--nms-iou`` gives in-process; out-of-range values are a 400 naming the
field."""

from __future__ import annotations

import json
from pathlib import Path

from models.package import ModelPackage
from models.tasks import VectorParams
from tests.service.conftest import Stack, nothing_left, upload
from workers import pipeline


def _boxes(doc: dict) -> list[list[list[float]]]:  # type: ignore[type-arg]
    return sorted(f["geometry"]["coordinates"][0] for f in doc["features"])


def test_min_score_and_nms_iou_fields_reach_the_mosaicker(
    stack: Stack, osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path
) -> None:
    default = pipeline.run(osbs_tif, rgb_model, tmp_path / "default")
    strict = pipeline.run(osbs_tif, rgb_model, tmp_path / "strict",
                          vector_params=VectorParams(min_score=0.35, nms_iou=0.1))
    assert 0 < strict["detections"] < default["detections"]
    with stack.client() as http:
        r = upload(http, osbs_tif, rgb_model.name, min_score="0.35", nms_iou="0.1")
        assert r.status_code == 202, r.text
        final = stack.wait_done(http, r.json()["id"])
        assert final["status"] == "done", final
        got = http.get(f"/v1/jobs/{final['id']}/results/detections.geojson").json()
    expected = json.loads((tmp_path / "strict" / "detections.geojson").read_text())
    assert _boxes(got) == _boxes(expected)


def test_an_out_of_range_min_score_is_a_400_naming_the_field(
    stack: Stack, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    check = nothing_left(stack)
    with stack.client() as http:
        r = upload(http, osbs_tif, rgb_model.name, min_score="1.5")
        assert r.status_code == 400, r.text
        assert "min_score" in r.json()["error"]["message"]
        j = http.post("/v1/jobs", json={"uri": str(osbs_tif), "model": rgb_model.name, "nms_iou": -0.1})
        assert j.status_code in (400, 422), j.text
        assert "nms_iou" in j.text
    check()

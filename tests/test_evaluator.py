"""engine/evaluator.py without data: an EvalResult survives its JSON (how eval workers report)."""
from __future__ import annotations

import json

import numpy as np

from segdistill_cli.engine.evaluator import EvalResult
from segdistill_cli.engine.metrics import ConfusionMatrix


def test_eval_result_round_trips_through_json():
    matrix = ConfusionMatrix.from_matrix(np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]]))
    result = EvalResult(matrix, num_images=3, seconds=1.25, flip=True, scales=(0.75, 1.0),
                        class_names=["a", "b", "c"], shards=2)
    data = json.loads(json.dumps(result.to_json("some/dir")))
    back = EvalResult.from_json(data)
    assert np.array_equal(back.matrix.matrix, matrix.matrix)
    assert (back.num_images, back.seconds, back.flip, back.scales, back.class_names,
            back.shards) == (3, 1.25, True, (0.75, 1.0), ["a", "b", "c"], 2)
    assert back.to_json("some/dir") == result.to_json("some/dir")
    # Negative control: another matrix gives other numbers.
    data["confusion_matrix"][0][0] = 0
    assert EvalResult.from_json(data).to_json()["miou"] != result.to_json()["miou"]

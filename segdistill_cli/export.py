"""`segdistill export`: the student alone as a Paddle inference model, verified after writing.

`<out>/model.pdmodel` + `model.pdiparams` (`paddle.static.save_inference_model`): input `image`
float32 [N, C, H, W] at EVAL_CROP_SIZE, already normalised; outputs, in this order, the label map
(int64 [N, H, W], argmax over classes) and the softmax probabilities (float32 [N, C, H, W]), or
the label map alone (`probabilities=False`, `--labels-only`): a softmax over the class axis at full
resolution is costly on the CPU (about a quarter of the CamVid student's time at 480x360,
docs/results.md), and a deployment that only draws the classes does not need it.
`<out>/deploy.yaml` says how to prepare an image (BGR, resize, pad, normalise) and what comes out.
Under Paddle 3's PIR the same call writes Paddle 3's inference format, `model.json` +
`model.pdiparams`, and the outputs are named by its fetch ops (`fetch_name_0`, `fetch_name_1`):
deploy.yaml names the file and the outputs that were written.

The export is written into a temporary folder beside `<out>`, reloaded with
`paddle.static.load_inference_model` into a fresh scope, run on a few validation images (or
generated inputs when the val list is absent) and compared with the checkpoint's own eval program:
label maps must be identical and probabilities allclose. Only then is it renamed into place, so
`<out>` is never a half-written or unverified export.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .atomic import staged_dir
from .errors import ConfigError, SegDistillError
from .palettes import class_names

MODEL_PREFIX = "model"
DEPLOY_FILE = "deploy.yaml"
VERIFY_IMAGES = 2
PROB_RTOL, PROB_ATOL = 1e-5, 1e-6


@dataclass
class ExportSummary:
    out_dir: Path
    files: list[Path]
    verified_on: str  # "3 validation images" / "2 generated inputs"
    max_prob_diff: float


def _build(cfg: Any, probabilities: bool) -> tuple[Any, list[Any]]:
    """The eval program plus its outputs: the label map, then the probabilities if asked for."""
    from .paddle_env import import_paddle
    from .programs import build_eval

    paddle = import_paddle()
    built = build_eval(cfg)
    with built.guard():
        outputs = [paddle.argmax(built.logits, axis=1)]
        if probabilities:
            outputs.append(paddle.nn.functional.softmax(built.logits, axis=1))
    return built, outputs


def verification_inputs(cfg: Any, count: int = VERIFY_IMAGES) -> tuple[np.ndarray, str]:
    """The first `count` val images through the eval pipeline, or seeded generated inputs."""
    from .data.dataset import SegDataset
    from .programs import feed_shape

    list_file = cfg.DATASET.VAL_FILE_LIST
    if list_file and Path(list_file).is_file():
        dataset = SegDataset(cfg, mode="eval")
        n = min(count, len(dataset))
        if n:
            images = np.stack([dataset.sample(i)["image"] for i in range(n)])
            return images, f"{n} validation image(s) from {list_file}"
    _, channels, height, width = feed_shape(cfg, "EVAL_CROP_SIZE")
    rng = np.random.default_rng(0)
    images = rng.uniform(-1.0, 1.0, (count, channels, height, width)).astype(np.float32)
    return images, f"{count} generated input(s) (no val list)"


def deploy_config(cfg: Any, output_names: list[str],
                  model_file: str = f"{MODEL_PREFIX}.pdmodel") -> dict[str, Any]:
    """deploy.yaml; `output_names`: the label map's, then the probabilities' if exported."""
    width, height = (int(v) for v in cfg.EVAL_CROP_SIZE)
    aug = cfg.AUG
    resize = {"method": aug.AUG_METHOD}
    if aug.AUG_METHOD == "unpadding":
        resize["size_wh"] = [int(v) for v in aug.FIX_RESIZE_SIZE]
    elif aug.AUG_METHOD == "rangescaling":
        resize["long_side"] = int(aug.INF_RESIZE_VALUE)
    else:
        resize["note"] = "stepscaling: no resize at inference"
    return {
        "model": {"file": model_file, "params": f"{MODEL_PREFIX}.pdiparams",
                  "format": "paddle.static.save_inference_model", "architecture":
                  f"deeplabv3p/{cfg.MODEL.DEEPLAB.BACKBONE}"},
        "input": {"name": "image", "dtype": "float32", "layout": "NCHW",
                  "shape": [-1, int(cfg.DATASET.DATA_DIM), height, width],
                  "channel_order": "BGR"},
        "preprocess": {
            "decode": "cv2.imread(path, cv2.IMREAD_COLOR) (BGR, never converted to RGB)",
            "resize": resize,
            "pad": {"where": "bottom/right", "to_wh": [width, height],
                    "value": [float(v) for v in cfg.DATASET.PADDING_VALUE]},
            "normalize": "(x / 255 - MEAN) / STD, per channel, then HWC -> CHW",
            "mean": [float(v) for v in cfg.MEAN], "std": [float(v) for v in cfg.STD],
        },
        "outputs": [
            {"name": output_names[0], "meaning": "label map: class id per pixel (argmax)",
             "dtype": "int64", "shape": [-1, height, width]},
            *({"name": name, "meaning": "softmax probabilities over classes",
               "dtype": "float32", "shape": [-1, int(cfg.DATASET.NUM_CLASSES), height, width]}
              for name in output_names[1:]),
        ],
        "postprocess": "crop the padding off the outputs; resize back with nearest if resized",
        "num_classes": int(cfg.DATASET.NUM_CLASSES),
        "class_names": class_names(cfg),
        "ignore_index": int(cfg.DATASET.IGNORE_INDEX),
    }


def _is_previous_export(path: Path) -> bool:
    return path.is_dir() and ((path / DEPLOY_FILE).is_file() or not any(path.iterdir()))


def export_model(choice: Any, out_dir: str | os.PathLike, place: Any = None,
                 verify_images: int = VERIFY_IMAGES, probabilities: bool = True) -> ExportSummary:
    """Export the chosen model's eval program with its weights; verify; install at `out_dir`.
    `probabilities=False`: the label map is the only output."""
    from .model_choice import check_model_dir, load_model
    from .paddle_env import import_paddle

    paddle = import_paddle()
    out = Path(out_dir)
    if out.exists() and not _is_previous_export(out):
        raise ConfigError(f"--out {out} exists and is not a segdistill export (no "
                              f"{DEPLOY_FILE}); choose a new folder")
    check_model_dir(choice)
    place = place or paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    built, outputs = _build(choice.cfg, probabilities)
    scope = paddle.static.Scope()
    load_model(built.main, choice, scope, place)

    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_dir(out, out.with_name(f".{out.name}.tmp-{os.getpid()}")) as tmp:
        with paddle.static.scope_guard(scope):  # save_inference_model reads the global scope
            paddle.static.save_inference_model(str(tmp / MODEL_PREFIX), [built.image],
                                               outputs, exe, program=built.main)
        names, model_file = _output_names(tmp, built.main, outputs)
        deploy = deploy_config(choice.cfg, names, model_file)
        (tmp / DEPLOY_FILE).write_text(yaml.safe_dump(deploy, sort_keys=False), encoding="utf-8")
        images, described = verification_inputs(choice.cfg, verify_images)
        expected = exe.run(built.main, feed={"image": images}, fetch_list=outputs, scope=scope)
        got = run_exported(tmp, images, place)
        max_diff = verify_same(expected, got)
    files = sorted(p for p in out.iterdir() if p.is_file())
    return ExportSummary(out, files, described, max_diff)


def _output_names(folder: Path, main: Any, outputs: list[Any]) -> tuple[list[str], str]:
    """(the outputs' names, model file) as written into `folder`. A PIR value has no name of
    its own (`Value.name` raises): the written program's fetch ops name the outputs, in order."""
    from .program_vars import is_pir_program

    if not is_pir_program(main):
        return [o.name for o in outputs], f"{MODEL_PREFIX}.pdmodel"
    from .paddle_env import import_paddle

    paddle = import_paddle()
    with paddle.static.scope_guard(paddle.static.Scope()):
        program, _, _ = paddle.static.load_inference_model(
            str(folder / MODEL_PREFIX), paddle.static.Executor(paddle.CPUPlace()))
    names = [op.attrs()["name"] for op in program.global_block().ops if op.name() == "pd_op.fetch"]
    return names, f"{MODEL_PREFIX}.json"


def run_exported(folder: str | os.PathLike, images: np.ndarray, place: Any = None
                 ) -> list[np.ndarray]:
    """Load an exported model into a fresh scope and run it: [label map(, probabilities)]."""
    from .paddle_env import import_paddle

    paddle = import_paddle()
    exe = paddle.static.Executor(place or paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        program, feed_names, fetch_targets = paddle.static.load_inference_model(
            str(Path(folder) / MODEL_PREFIX), exe)
        outputs = exe.run(program, feed={feed_names[0]: images}, fetch_list=fetch_targets)
    return [np.asarray(o) for o in outputs]


def verify_same(expected: list[Any], got: list[Any]) -> float:
    """Raise unless label maps are identical and probabilities (if exported) allclose; return
    the probabilities' max |diff| (0 without them)."""
    if len(expected) != len(got):
        raise SegDistillError(f"export verification failed: the exported model has {len(got)} "
                              f"output(s), the checkpoint's program {len(expected)}; nothing written")
    want_labels, *want_rest = (np.asarray(x) for x in expected)
    got_labels, *got_rest = (np.asarray(x) for x in got)
    if want_labels.shape != got_labels.shape or not np.array_equal(want_labels, got_labels):
        differ = int((want_labels != got_labels).sum()) if want_labels.shape == got_labels.shape \
            else "all"
        raise SegDistillError(f"export verification failed: the exported model's label maps "
                              f"differ from the checkpoint's ({differ} pixels); nothing written")
    if not want_rest:
        return 0.0
    want_probs, got_probs = want_rest[0], got_rest[0]
    if want_probs.shape != got_probs.shape or not np.allclose(want_probs, got_probs,
                                                             rtol=PROB_RTOL, atol=PROB_ATOL):
        raise SegDistillError("export verification failed: the exported model's probabilities "
                              "differ from the checkpoint's; nothing written")
    return float(np.abs(want_probs - got_probs).max()) if want_probs.size else 0.0

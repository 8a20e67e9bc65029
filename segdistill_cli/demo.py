"""`segdistill demo`: the whole flow on generated data, on the CPU, in a few minutes, no network.

generate scenes (data/synthetic.py) → write a teacher and a student config → train the teacher
alone → rank distillation pairs (inspect) → distil the student → train the same student without a
teacher (the baseline that shows what distillation added) → evaluate the three → predict a few
validation pictures.

Every step calls the same library functions as the commands (Trainer, inspect_configs,
eval_run.evaluate_model, predict.run_predict) in this process, not subprocesses: Paddle is imported
once (saves ~3 s per step), errors surface as the usual SegDistillError, and the results come back
as objects instead of parsed text.

The configs are YAML text embedded below (not read from the repository's configs/ folder, which an
installed package does not have) and are written to `<out>/configs/`, so the printed follow-up
commands work on them as they are. Layout of `<out>`:

    configs/{teacher,student,baseline}.yaml   data/ (generated; removed at the end unless keep_data)
    teacher/ student/ baseline/               checkpoints as `segdistill train` writes them
    predictions/{pred,overlay}/               pictures of the distilled student on val images
    summary.json                              the numbers of the summary table
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .config import Configs, load_configs
from .errors import ConfigError

MARKER = ".segdistill-demo"  # marks a folder written by the demo: safe to overwrite
NUM_CLASSES = 5
IGNORE_INDEX = 255
CLASS_NAMES = ["background", "disc", "box", "stripes", "ring"]
PREDICT_IMAGES = 4


@dataclass(frozen=True)
class DemoSize:
    """How much work the demo does. `default` fits in ~2-3 min on 2 CPU cores; `tiny` is for tests."""

    image: tuple[int, int]  # (width, height) of the generated scenes = crop size
    train_images: int
    val_images: int
    batch: int
    teacher_epochs: int
    student_epochs: int
    workers: int


SIZES = {
    "default": DemoSize((64, 64), 80, 16, 8, 8, 8, 1),
    "tiny": DemoSize((32, 32), 8, 4, 4, 1, 1, 0),
}

# The teacher: DeepLabv3+ with ASPP and decoder on a MobileNetV2 x1.0 backbone (the student's
# family, bigger; output stride 16, the decoder restores stride 4). BN_MOMENTUM 0.9 instead of
# legacy's 0.99: after ~80 steps 0.99's moving statistics have not caught up with the weights and
# eval would lag far behind training.
_COMMON = """\
EVAL_CROP_SIZE: ({w}, {h})
TRAIN_CROP_SIZE: ({w}, {h})
AUG:
    AUG_METHOD: "unpadding"
    FIX_RESIZE_SIZE: ({w}, {h})
    MIRROR: True
BATCH_SIZE: {batch}
DATALOADER:
    NUM_WORKERS: {workers}
DATASET:
    DATA_DIR: "{data}/"
    NUM_CLASSES: {num_classes}
    TRAIN_FILE_LIST: "{data}/train.list"
    VAL_FILE_LIST: "{data}/val.list"
    TEST_FILE_LIST: "{data}/val.list"
    IGNORE_INDEX: {ignore}
    CLASS_NAMES: [{class_names}]
SOLVER:
    LR: 0.05
    LR_POLICY: "poly"
    OPTIMIZER: "sgd"
    NUM_EPOCHS: {epochs}
"""
TEACHER_YAML = _COMMON + """\
MODEL:
    MODEL_NAME: "deeplabv3p"
    BN_MOMENTUM: 0.9
    DEEPLAB:
        BACKBONE: "mobilenetv2"
        DEPTH_MULTIPLIER: 1.0
        ENCODER_WITH_ASPP: True
        ENABLE_DECODER: True
TRAIN:
    MODEL_SAVE_DIR: "{out}/teacher/"
    SNAPSHOT_EPOCH: {epochs}
TEST:
    TEST_MODEL: "{out}/teacher/best_model"
SLIM:
    KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR: "{out}/teacher/best_model"
"""
# The student: MobileNetV2 x0.5 without ASPP and decoder (the tutorial's student shape), output
# stride 8 so that small shapes survive. Pairs: the tutorial's l2 on logits, plus a class-axis KL
# (T=2, ignore pixels masked) that carries the teacher's relative class confidences.
STUDENT_YAML = _COMMON + """\
MODEL:
    MODEL_NAME: "deeplabv3p"
    BN_MOMENTUM: 0.9
    DEEPLAB:
        BACKBONE: "mobilenetv2"
        DEPTH_MULTIPLIER: 0.5
        OUTPUT_STRIDE: 8
        ENCODER_WITH_ASPP: False
        ENABLE_DECODER: False
TRAIN:
    MODEL_SAVE_DIR: "{out}/{role}/"
    SNAPSHOT_EPOCH: {epochs}
TEST:
    TEST_MODEL: "{out}/{role}/best_model"
DISTILL:
    - {{TEACHER: logits, STUDENT: logits, LOSS: l2, WEIGHT: 0.1}}
    - {{TEACHER: logits, STUDENT: logits, LOSS: kl, TEMPERATURE: 2, WEIGHT: 1}}
"""


@dataclass
class ModelRow:
    """One line of the summary table."""

    name: str
    description: str
    miou: Optional[float] = None
    acc: Optional[float] = None
    train_seconds: float = 0.0
    model_dir: str = ""


@dataclass
class DemoResult:
    out_dir: str
    size: str
    rows: list[ModelRow] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)  # "teacher <-> student (loss, reason)"
    predictions_dir: Optional[str] = None
    prediction_images: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    data_kept: bool = True
    commands: list[str] = field(default_factory=list)

    def row(self, name: str) -> ModelRow:
        return next(r for r in self.rows if r.name == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Log = Callable[[str], None]


def prepare_out_dir(out: Path) -> None:
    """Create `out`, or reuse one written by an earlier demo; never clobber a foreign folder."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ConfigError(f"--out {out} exists, is not empty and was not written by "
                                  "`segdistill demo`; choose another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by segdistill demo; safe to delete\n", encoding="utf-8")


def write_configs(out: Path, size: DemoSize) -> dict[str, Path]:
    """teacher.yaml, student.yaml (distilled) and baseline.yaml (same student, own save dir)."""
    config_dir = out / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    values = dict(w=size.image[0], h=size.image[1], batch=size.batch, workers=size.workers,
                  data=(out / "data").as_posix(), out=out.as_posix(), num_classes=NUM_CLASSES,
                  ignore=IGNORE_INDEX, class_names=", ".join(CLASS_NAMES))
    texts = {
        "teacher": TEACHER_YAML.format(epochs=size.teacher_epochs, **values),
        "student": STUDENT_YAML.format(epochs=size.student_epochs, role="student", **values),
        "baseline": STUDENT_YAML.format(epochs=size.student_epochs, role="baseline", **values),
    }
    paths = {}
    for role, text in texts.items():
        paths[role] = config_dir / f"{role}.yaml"
        paths[role].write_text(f"# written by `segdistill demo` ({role})\n{text}", encoding="utf-8")
    return paths


def _train(configs: Configs, use_teacher: bool, seed: int, log: Log) -> tuple[Any, float]:
    from .engine.trainer import Trainer, TrainOptions
    from .launcher import RunContext

    # The teacher check runs and prints its line; at the default size the demo's teacher passes
    # it, the tests' tiny size trains it too briefly to, so a weak verdict only warns here.
    options = TrainOptions(use_teacher=use_teacher, do_eval=True, seed=seed,
                           log_steps=10 ** 6, check_data="full", argv=["demo"],
                           allow_weak_teacher=True)
    start = time.perf_counter()
    summary = Trainer(configs, options, RunContext(device="cpu"), log=log).run()
    return summary, time.perf_counter() - start


def _evaluate(cfg: Any, model_dir: str) -> Any:
    from .eval_run import EvalOptions, evaluate_model
    from .model_choice import ModelChoice, check_model_dir

    choice = ModelChoice(cfg, Path(model_dir), "student", origin="demo")
    check_model_dir(choice)
    return evaluate_model(choice, EvalOptions(cpu=True))


def _suggest(configs: Configs, top: int = 3) -> list[str]:
    from .inspect import inspect_configs

    pairs = inspect_configs(configs.student, configs.teacher).pairs()[:top]
    return [f"{p.teacher.ref} <-> {p.student.ref}: {p.loss}, weight {p.weight}"
            f"{', adapter ' + p.adapter if p.adapter else ''} ({p.reason})" for p in pairs]


def _predict(cfg: Any, model_dir: str, out: Path) -> tuple[Optional[Path], int]:
    """Pictures of the distilled student on the first val images (with ground truth)."""
    try:
        from .predict import collect_inputs, run_predict
        from .model_choice import ModelChoice
    except ImportError:  # the predict library is optional for the demo's core flow
        return None, 0
    choice = ModelChoice(cfg, Path(model_dir), "student", origin="demo")
    inputs = collect_inputs(cfg, list_file=cfg.DATASET.VAL_FILE_LIST)[:PREDICT_IMAGES]
    summary = run_predict(choice, inputs, out / "predictions", with_label=True)
    return out / "predictions", summary.images


def _prune_checkpoints(save_dir: Path) -> None:
    """Keep best_model/ and final/ (what eval/predict/export read); drop per-epoch snapshots."""
    for child in save_dir.iterdir() if save_dir.is_dir() else []:
        if child.is_dir() and child.name.isdigit():
            shutil.rmtree(child)


def run_demo(out: str | Path = "segdistill_demo", size: str = "default", keep_data: bool = False,
             baseline: bool = True, seed: int = 0, log: Log = print,
             stage: Optional[Log] = None) -> DemoResult:
    """Run the whole demo into `out`; returns the numbers and paths of the summary.

    `log` receives the trainer's progress lines, `stage` one line per step of the demo.
    """
    from .data.synthetic import write_synthetic_dataset

    if size not in SIZES:
        raise ConfigError(f"demo size {size!r} is not one of {', '.join(SIZES)}")
    stage = stage or log
    plan, out = SIZES[size], Path(out).resolve()
    result = DemoResult(str(out), size)
    begin = time.perf_counter()
    prepare_out_dir(out)

    def timed(name: str, message: str, fn: Callable[[], Any]) -> Any:
        stage(message)
        start = time.perf_counter()
        value = fn()
        result.stage_seconds[name] = round(time.perf_counter() - start, 2)
        return value

    timed("data", f"generating {plan.train_images}+{plan.val_images} scenes "
          f"{plan.image[0]}x{plan.image[1]}, {NUM_CLASSES} classes + ignore {IGNORE_INDEX} "
          f"in {out / 'data'}",
          lambda: write_synthetic_dataset(out / "data", plan.train_images, plan.val_images,
                                          size=plan.image, num_classes=NUM_CLASSES,
                                          ignore_index=IGNORE_INDEX, seed=seed))
    paths = write_configs(out, plan)
    teacher_only = load_configs(paths["teacher"])
    distill = load_configs(paths["student"], paths["teacher"])
    alone = load_configs(paths["baseline"])

    summary, seconds = timed("teacher", "training the teacher (DeepLabv3+ MobileNetV2 x1.0, "
                             "ASPP + decoder) without a teacher",
                             lambda: _train(teacher_only, False, seed, log))
    result.rows.append(ModelRow("teacher", "MobileNetV2 x1.0 + ASPP + decoder",
                                train_seconds=round(seconds, 1),
                                model_dir=str(out / "teacher" / "best_model")))
    result.suggestions = timed("inspect", "ranking distillation pairs (inspect-vars --suggest)",
                               lambda: _suggest(distill))
    for line in result.suggestions:
        stage(f"  suggested: {line}")
    summary, seconds = timed("student", "distilling the student (MobileNetV2 x0.5, no ASPP/decoder; "
                             "l2 + kl on logits)", lambda: _train(distill, True, seed, log))
    result.rows.append(ModelRow("student (distilled)", "MobileNetV2 x0.5, l2 + kl on logits",
                                train_seconds=round(seconds, 1),
                                model_dir=str(out / "student" / "best_model")))
    if baseline:
        summary, seconds = timed("baseline", "training the same student without a teacher "
                                 "(baseline)", lambda: _train(alone, False, seed, log))
        result.rows.append(ModelRow("student (no teacher)", "MobileNetV2 x0.5, CE only",
                                    train_seconds=round(seconds, 1),
                                    model_dir=str(out / "baseline" / "best_model")))
    configs_of = {"teacher": teacher_only.student, "student (distilled)": distill.student,
                  "student (no teacher)": alone.student}

    def evaluate_all() -> None:
        for row in result.rows:
            evaluation = _evaluate(configs_of[row.name], row.model_dir)
            row.miou = round(float(evaluation.matrix.mean_iou()), 4)
            row.acc = round(float(evaluation.matrix.accuracy()), 4)

    timed("eval", "evaluating every model on the val scenes", evaluate_all)
    predictions, count = timed("predict", f"predicting {PREDICT_IMAGES} val pictures with the "
                               "distilled student",
                               lambda: _predict(distill.student, result.row("student (distilled)")
                                                .model_dir, out))
    result.predictions_dir = str(predictions) if predictions else None
    result.prediction_images = count
    for role in ("teacher", "student", "baseline"):
        _prune_checkpoints(out / role)
    result.commands = follow_up_commands(paths)
    result.data_kept = keep_data
    if not keep_data:
        shutil.rmtree(out / "data", ignore_errors=True)
    result.total_seconds = round(time.perf_counter() - begin, 1)
    (out / "summary.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    return result


def follow_up_commands(paths: dict[str, Path]) -> list[str]:
    """The commands a user would type to repeat or extend the demo on its configs."""
    student, teacher = paths["student"], paths["teacher"]
    out = student.parent.parent
    return [
        f"segdistill inspect-vars --cfg {student} --teacher-cfg {teacher} --suggest",
        f"segdistill train --cfg {student} --teacher-cfg {teacher}",
        f"segdistill eval --cfg {student}",
        f"segdistill predict --cfg {student} --list {out / 'data' / 'val.list'} --with-label "
        f"--out {out / 'predictions'}",
    ]

"""Shared benchmark helpers: the model pairs, random teacher weights, the three static steps users
run (distill, student-only train, teacher inference) built with the real trainer code, and a
dygraph backend for the legacy model code (the hand-written dygraph loop of step_time.py).

Pairs (student / teacher, batch, crop):
  tutorial  configs/cityscape.yaml / cityscape_teacher.yaml (MobileNetV2 / Xception65 DeepLabv3+,
            19 classes, the tutorial's l2 logits pair), crop 257x257 (the CPU cannot run 769), batch 2
  camvid    configs/camvid.yaml / camvid_teacher.yaml (MobileNetV2 x0.5 / x1.0 + ASPP + decoder,
            11 classes), crop 240x180, batch 4
Benchmarks never read images: every step is fed one fixed random batch (loader_bench.py measures
the loader).
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segdistill_cli.config import Configs, load_configs  # noqa: E402
from segdistill_cli.paddle_env import import_paddle  # noqa: E402
from segdistill_cli.program_vars import is_pir_program  # noqa: E402

PAIRS = {
    "tutorial": ("cityscape.yaml", "cityscape_teacher.yaml", (257, 257), 2),
    "camvid": ("camvid.yaml", "camvid_teacher.yaml", (240, 180), 4),
}
SEED = 0
TRAIN_IMAGES = 1000  # only sizes the LR schedule


def pair_configs(pair: str, teacher_dir: str = "") -> Configs:
    student, teacher, (w, h), batch = PAIRS[pair]
    crop = [f"TRAIN_CROP_SIZE=({w},{h})", f"EVAL_CROP_SIZE=({w},{h})", f"BATCH_SIZE={batch}",
            "TRAIN.PRETRAINED_MODEL_DIR="]
    return load_configs(ROOT / "configs" / student, ROOT / "configs" / teacher, crop,
                        crop + [f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={teacher_dir}"])


def random_batch(cfg: Any, seed: int = SEED) -> dict[str, np.ndarray]:
    """One feed dict as the loader produces it: normalised image, int32 label, mask and distill
    mask (PIR's executor requires every input to be fed; no padding here, so all ones)."""
    rng = np.random.default_rng(seed)
    w, h = cfg.TRAIN_CROP_SIZE
    n, classes = int(cfg.BATCH_SIZE), int(cfg.DATASET.NUM_CLASSES)
    label = rng.integers(0, classes, size=(n, 1, h, w)).astype(np.int32)
    return {"image": rng.uniform(-1, 1, size=(n, 3, h, w)).astype(np.float32),
            "label": label, "mask": np.ones_like(label), "distill_mask": np.ones_like(label)}


def write_random_teacher(configs: Configs, folder: Path) -> Path:
    """A teacher checkpoint with initial (random) weights, written by the real checkpoint code;
    speed and memory do not depend on the values."""
    from segdistill_cli.engine import checkpoints
    from segdistill_cli.engine.graph import build_train_graph
    from segdistill_cli.launcher import RunContext

    teacher_alone = Configs(configs.teacher, None)
    graph = build_train_graph(teacher_alone, RunContext(), TRAIN_IMAGES, SEED, False, _quiet)
    return checkpoints.save_checkpoint(graph.main, graph.scope, folder, "random", {"epoch": 0})


def _quiet(message: str) -> None:
    pass


@dataclass
class StaticStep:
    """One runnable step: the executor, the (compiled) program, its scope, feed and fetches."""

    name: str
    exe: Any
    program: Any
    scope: Any
    feed: dict
    fetch: list

    keep: tuple = ()  # objects whose programs must outlive the step (PIR values point into them)

    def __call__(self) -> None:
        if not is_pir_program(self.program):
            self.exe.run(self.program, feed=self.feed, fetch_list=self.fetch, scope=self.scope)
            return
        # as engine/graph.run_step: 3.3.1's PIR executor writes the LR into the global scope
        with import_paddle().static.scope_guard(self.scope):
            self.exe.run(self.program, feed=self.feed, fetch_list=self.fetch, scope=self.scope)


def train_step(configs: Configs, use_teacher: bool) -> StaticStep:
    """The step `segdistill train` runs: engine.graph.build_train_graph + Trainer._program, fetching
    the logged loss terms, exactly as Trainer._step does."""
    from segdistill_cli.engine.graph import build_train_graph
    from segdistill_cli.engine.trainer import Trainer, TrainOptions
    from segdistill_cli.launcher import RunContext

    ctx = RunContext()
    graph = build_train_graph(configs, ctx, TRAIN_IMAGES, SEED, use_teacher, _quiet)
    program = Trainer(configs, TrainOptions(use_teacher=use_teacher), ctx)._program(graph)
    name = "distill" if use_teacher else "student"
    return StaticStep(name, graph.exe, program, graph.scope, random_batch(configs.student),
                      list(graph.fetch_terms().values()), keep=(graph,))


def teacher_inference_step(configs: Configs) -> StaticStep:
    """The teacher alone in inference mode (what the distill step adds), loaded like train does."""
    from segdistill_cli.distill.teacher import load_teacher, use_teacher_kernels
    from segdistill_cli.programs import build_student_train, build_teacher

    paddle = import_paddle()
    place = paddle.CPUPlace()
    student = build_student_train(configs.student)  # kept alive: under PIR a value's shape is
    image_shape = list(student.image.shape)  # read from its program (freed program: segfault)
    teacher = build_teacher(configs.teacher, image_shape)
    exe = paddle.static.Executor(place)
    scope = load_teacher(configs, teacher, exe, place, _quiet)
    use_teacher_kernels(teacher.main, prefix="")  # as in training (the program is the teacher)
    program = teacher.main
    if not is_pir_program(program):  # CompiledProgram refuses a PIR program (as the trainer)
        strategy = paddle.static.BuildStrategy()
        strategy.fuse_elewise_add_act_ops = True
        program = paddle.static.CompiledProgram(teacher.main, build_strategy=strategy)
    feed = {"image": random_batch(configs.student)["image"]}
    return StaticStep("teacher", exe, program, scope, feed, [teacher.logits], keep=(student,))


# ---- dygraph backend for the legacy model code ---------------------------------------------------


class DygraphOps:
    """`models.layers.Ops` in dygraph: each conv / BN becomes an `nn` layer created on first use and
    cached under its legacy parameter name, so the SAME model code (xception.py, mobilenet_v2.py,
    deeplabv3p.py) builds the same architecture as the static programs."""

    def __init__(self, owner: Any) -> None:
        import paddle  # not import_paddle(): that switches back to static mode

        self.paddle = paddle
        self.owner = owner  # the nn.Layer that holds the created layers

    def _layer(self, key: str, make: Callable[[], Any]) -> Any:
        safe = key.replace("/", "__").replace(".", "_")
        layers = self.owner.created
        if safe not in layers:
            layers[safe] = make()
        return layers[safe]

    def channels(self, x):
        return int(x.shape[1])

    def conv2d(self, x, filters, size, stride, padding, dilation, groups, weight_name, bias_name):
        nn = self.paddle.nn
        conv = self._layer(weight_name, lambda: nn.Conv2D(
            int(x.shape[1]), filters, size, stride=stride, padding=padding, dilation=dilation,
            groups=groups, bias_attr=None if bias_name else False))
        return conv(x)

    def batch_norm(self, x, prefix, suffixes, epsilon, momentum, no_decay):
        nn = self.paddle.nn
        bn = self._layer(prefix, lambda: nn.BatchNorm2D(int(x.shape[1]), momentum=momentum,
                                                        epsilon=epsilon))
        return bn(x)

    def relu(self, x):
        return self.paddle.nn.functional.relu(x)

    def relu6(self, x):
        return self.paddle.nn.functional.relu6(x)

    def add(self, x, y):
        return x + y

    def concat(self, xs):
        return self.paddle.concat(list(xs), axis=1)

    def spatial_mean(self, x):
        return self.paddle.mean(x, axis=[2, 3], keepdim=True)

    def resize_like(self, x, like):
        return self.paddle.nn.functional.interpolate(x, size=list(like.shape[2:4]),
                                                     mode="bilinear", align_corners=True)

    def dropout(self, x, p):
        return self.paddle.nn.functional.dropout(x, p=p, training=self.owner.training,
                                                 mode="downscale_in_infer")

    def name_of(self, x):
        return None

    def op_scope(self, name):
        return contextlib.nullcontext()


def dygraph_model(cfg: Any, example: np.ndarray) -> Any:
    """A dygraph nn.Layer running the legacy model code for `cfg`; layers are created by one
    forward pass on `example` (call inside `paddle.disable_static()`)."""
    import paddle  # not import_paddle(): that switches back to static mode
    from segdistill_cli.models.deeplabv3p import deeplabv3p
    from segdistill_cli.models.layers import LegacyNet

    class LegacyDeepLab(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.created = paddle.nn.LayerDict()
            self.ops = DygraphOps(self)

        def forward(self, image):
            net = LegacyNet(self.ops, bn_momentum=float(cfg.MODEL.BN_MOMENTUM))
            return deeplabv3p(net, image, cfg.MODEL.DEEPLAB, int(cfg.DATASET.NUM_CLASSES))

    model = LegacyDeepLab()
    with paddle.no_grad():
        model(paddle.to_tensor(example))
    return model


def check_same_architecture(cfg: Any, model: Any) -> None:
    """The dygraph model holds exactly the static model's tensors (names aside): same count of
    parameters + BN statistics, same total size."""
    from segdistill_cli.models import parameter_manifest

    static = parameter_manifest(cfg)
    dygraph = model.state_dict()
    static_size = sum(int(np.prod(shape)) for shape in static.values())
    dygraph_size = sum(int(np.prod(t.shape)) for t in dygraph.values())
    if (len(static), static_size) != (len(dygraph), dygraph_size):
        raise AssertionError(f"dygraph model differs: {len(dygraph)} tensors / {dygraph_size} values "
                             f"vs static {len(static)} / {static_size}")


class DygraphDistillStep:
    """The hand-written dygraph loop a user would write: teacher.eval() under no_grad, student CE
    over valid pixels (as engine/seg_loss.py) + the tutorial's 0.1 * l2 on logits, Momentum."""

    name = "dygraph"

    def __init__(self, configs: Configs) -> None:
        paddle = self.paddle = import_paddle()
        batch = random_batch(configs.student)
        paddle.disable_static()
        try:
            paddle.seed(SEED)
            self.student = dygraph_model(configs.student, batch["image"])
            self.teacher = dygraph_model(configs.teacher, batch["image"])
            self.teacher.eval()
            for cfg, model in ((configs.student, self.student), (configs.teacher, self.teacher)):
                check_same_architecture(cfg, model)
            for p in self.teacher.parameters():
                p.stop_gradient = True
            solver = configs.student.SOLVER
            self.optimizer = paddle.optimizer.Momentum(
                float(solver.LR), float(solver.MOMENTUM), parameters=self.student.parameters(),
                weight_decay=paddle.regularizer.L2Decay(float(solver.WEIGHT_DECAY)))
            self.image = paddle.to_tensor(batch["image"])
            self.label = paddle.to_tensor(batch["label"].astype(np.int64))
            self.mask = paddle.to_tensor(batch["mask"].astype(np.float32))
            self.ignore = int(configs.student.DATASET.IGNORE_INDEX)
        finally:
            paddle.enable_static()

    def __call__(self) -> None:
        paddle = self.paddle
        F = paddle.nn.functional
        paddle.disable_static()
        try:
            with paddle.no_grad():
                t_logits = self.teacher(self.image)
            s_logits = self.student(self.image)
            ce = F.softmax_with_cross_entropy(s_logits, self.label, ignore_index=self.ignore, axis=1)
            ce = paddle.mean(ce * self.mask) / (paddle.mean(self.mask) + 1e-5)
            loss = ce + 0.1 * paddle.mean(paddle.square(s_logits - t_logits))
            loss.backward()
            self.optimizer.step()
            self.optimizer.clear_grad()
            float(loss)  # the loop logs the loss, like the static step's fetch
        finally:
            paddle.enable_static()


# ---- measurement -----------------------------------------------------------------------------------


def time_once(step: Callable[[], None], steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, per_round: int,
                warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per step for each named step, measured A,B,C,A,B,C,... so that load changes on a
    shared machine hit all of them alike."""
    for step in steps.values():
        time_once(step, warmup)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            samples[name] += time_once(step, per_round)
    return samples


def median_spread(values: list[float]) -> tuple[float, float, float]:
    """(median, 25th percentile, 75th percentile)."""
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return statistics.median(values), q[0], q[2]


def fmt_ms(values: list[float]) -> str:
    m, lo, hi = median_spread(values)
    return f"{1000 * m:8.1f} ms (IQR {1000 * lo:.0f}-{1000 * hi:.0f}, n={len(values)})"


# The vector extensions that decide which kernels oneDNN and MKL pick at run time: results of
# runs that use them (the teacher's oneDNN kernels inside distillation) can differ between CPUs.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def cpu_model() -> str:
    """The CPU's model name and which of ISA_FLAGS it has, e.g. "AMD EPYC (avx2 avx512f)"."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # first CPU's lines only
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get("model name") or platform.processor() or "?"
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ISA_FLAGS if f in flags]
    return f"{cpu} ({' '.join(isa) or 'no AVX2'})" if flags else cpu


def machine() -> str:
    paddle = import_paddle()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Paddle {paddle.__version__}, load average {' '.join(f'{x:.2f}' for x in load)}")


@contextlib.contextmanager
def temp_dir(prefix: str):
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def run_child(args: list[str], timeout: float = 1800) -> str:
    return subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT).stdout

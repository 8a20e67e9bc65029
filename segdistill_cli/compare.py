"""`segdistill compare RUN_DIR ...`: what users otherwise collect by hand from several runs.

Reads each run's `run.json` and `train_log.jsonl` (both written by `train`; every field is
optional, so runs of earlier segdistill versions load too: an older run.json has no
`teacher_check`, an older log no `raw/` or `mask/` terms) and gives:
- a summary per run: final and best val mIoU, pixel accuracy, per-class IoU, steps, epochs,
  wall time, distill pairs and their last logged terms, the teacher check;
- plots: val mIoU per epoch of every run on one chart, and one chart per logged loss term
  (`loss/<name>` in the log) over the steps, every run that logged it on the chart.

Wall time is from run.json's `started` to the last log record (a resumed run rewrites `started`,
so its wall time is that of the last session), or the span of the log without `started`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import ConfigError, SegDistillError

RUN_JSON, TRAIN_LOG = "run.json", "train_log.jsonl"
MIOU_PNG = "val_miou.png"


@dataclass
class EvalPoint:
    epoch: Any
    step: Optional[int]
    miou: float
    acc: Optional[float]
    class_iou: list[float] = field(default_factory=list)


@dataclass
class RunSummary:
    name: str
    path: str
    final: Optional[EvalPoint]
    best: Optional[EvalPoint]
    evals: list[EvalPoint]
    class_names: list[str]
    steps: Optional[int]
    epochs: Optional[Any]
    wall_seconds: Optional[float]
    distill_pairs: list[str]
    last_terms: dict[str, float]  # the last train record's loss/, raw/ and mask/ values
    teacher_check: Optional[dict[str, Any]]
    seed: Optional[int]
    # step -> value per logged term (for the plots; not in --json)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("curves")
        data.pop("evals")
        data["val_miou_per_epoch"] = [[e.epoch, e.miou] for e in self.evals]
        return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SegDistillError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SegDistillError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SegDistillError(f"{path}: expected a JSON object")
    return data


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's records; a last line cut short (a run killed while writing) is skipped, any
    other broken line is an error naming it."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                continue
            raise SegDistillError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def _started(run: dict[str, Any]) -> Optional[float]:
    """run.json's `started` (as `train` writes it: %Y-%m-%dT%H:%M:%S%z) as a Unix time."""
    from datetime import datetime

    text = run.get("started")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (TypeError, ValueError):
        return None


def _eval_point(record: dict[str, Any]) -> EvalPoint:
    return EvalPoint(epoch=record.get("epoch"), step=record.get("step"),
                     miou=float(record["miou"]), acc=_float(record.get("acc")),
                     class_iou=[float(v) for v in record.get("class_iou") or []])


def _float(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarize(run_dir: str | Path, name: Optional[str] = None) -> RunSummary:
    """One run's summary; an error naming the folder when it holds neither file."""
    folder = Path(run_dir)
    run_path, log_path = folder / RUN_JSON, folder / TRAIN_LOG
    if not folder.is_dir():
        raise ConfigError(f"RUN_DIR {folder}: not a directory")
    if not run_path.is_file() and not log_path.is_file():
        raise ConfigError(f"RUN_DIR {folder}: no {RUN_JSON} or {TRAIN_LOG} (is it a `segdistill "
                          "train` output folder, TRAIN.MODEL_SAVE_DIR?)")
    run = _read_json(run_path) if run_path.is_file() else {}
    records = read_log(log_path)
    evals = [_eval_point(r) for r in records if r.get("type") == "eval" and "miou" in r]
    trains = [r for r in records if r.get("type") == "train"]
    curves: dict[str, list[tuple[int, float]]] = {}
    for record in trains:
        for key, value in record.items():
            if key.startswith(("loss/", "raw/", "mask/")) and _float(value) is not None:
                curves.setdefault(key, []).append((int(record.get("step", 0)), float(value)))
    names = next((list(r["class_names"]) for r in reversed(records)
                  if r.get("type") == "eval" and r.get("class_names")), [])
    times = [float(r["time"]) for r in records if _float(r.get("time")) is not None]
    start = _started(run)
    wall = (times[-1] - start) if times and start is not None else (
        times[-1] - times[0] if len(times) > 1 else None)
    last = trains[-1] if trains else {}
    return RunSummary(
        name=name or folder.name, path=str(folder),
        final=evals[-1] if evals else None,
        best=max(evals, key=lambda e: e.miou) if evals else None, evals=evals,
        class_names=names,
        steps=max((int(r["step"]) for r in records if "step" in r), default=None),
        epochs=max((r["epoch"] for r in trains if isinstance(r.get("epoch"), int)), default=None),
        wall_seconds=round(wall, 1) if wall is not None else None,
        distill_pairs=[str(p) for p in run.get("distill_pairs") or []],
        last_terms={k: float(v) for k, v in last.items()
                    if k.startswith(("loss/", "raw/", "mask/")) and _float(v) is not None},
        teacher_check=run.get("teacher_check"), seed=run.get("seed"), curves=curves)


def summarize_all(run_dirs: Sequence[str | Path]) -> list[RunSummary]:
    """Summaries in the given order, named by folder (parent/folder where two names clash)."""
    if not run_dirs:
        raise ConfigError("compare: give at least one RUN_DIR")
    paths = [Path(p) for p in run_dirs]
    plain = [p.name or str(p) for p in paths]
    names = [f"{p.parent.name}/{n}" if plain.count(n) > 1 else n for p, n in zip(paths, plain)]
    return [summarize(p, n) for p, n in zip(paths, names)]


# ---- table ---------------------------------------------------------------------------------------

def _fmt(value: Optional[float], digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _teacher(check: Optional[dict[str, Any]]) -> str:
    if not check:
        return "—"
    return f"{check.get('verdict', '?')}: mIoU {_fmt(_float(check.get('miou')))}, acc " \
           f"{_fmt(_float(check.get('acc')))} ({check.get('images', '?')} img)"


def table_rows(runs: Sequence[RunSummary]) -> list[tuple[str, list[str]]]:
    """(row label, one cell per run): the metrics, then the per-class IoU side by side."""
    rows: list[tuple[str, list[str]]] = [
        ("final val mIoU", [_fmt(r.final.miou) if r.final else "—" for r in runs]),
        ("best val mIoU (epoch)", [f"{r.best.miou:.4f} ({r.best.epoch})" if r.best else "—"
                                   for r in runs]),
        ("final pixel accuracy", [_fmt(r.final.acc) if r.final else "—" for r in runs]),
        ("steps", [str(r.steps) if r.steps is not None else "—" for r in runs]),
        ("epochs", [str(r.epochs) if r.epochs is not None else "—" for r in runs]),
        ("wall time", [_duration(r.wall_seconds) for r in runs]),
        ("seed", [str(r.seed) if r.seed is not None else "—" for r in runs]),
        ("distill pairs", ["; ".join(r.distill_pairs) or "— (no teacher)" for r in runs]),
        ("last logged terms", [", ".join(f"{k.split('/', 1)[1] if k.startswith('loss/') else k}"
                                         f"={v:.4f}" for k, v in r.last_terms.items()) or "—"
                               for r in runs]),
        ("teacher check", [_teacher(r.teacher_check) for r in runs]),
    ]
    count = max((len(r.final.class_iou) for r in runs if r.final), default=0)
    names = next((r.class_names for r in runs if len(r.class_names) == count), [])
    for c in range(count):
        label = f"IoU {names[c] if c < len(names) else c}"
        rows.append((label, [_fmt(r.final.class_iou[c], 3) if r.final and
                             c < len(r.final.class_iou) else "—" for r in runs]))
    return rows


# ---- plots ---------------------------------------------------------------------------------------

def miou_figure(runs: Sequence[RunSummary]) -> Any:
    """Val mIoU per epoch, one line per run."""
    from matplotlib.ticker import MaxNLocator

    from .eval_plots import pyplot

    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for run in runs:
        points = [(e.epoch, e.miou) for e in run.evals if isinstance(e.epoch, int)]
        if points:
            ax.plot(*zip(*points), marker="o", label=run.name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no "2.5" ticks
    ax.set_ylabel("val mIoU")
    ax.set_title("Validation mIoU per epoch")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


def write_plots(runs: Sequence[RunSummary], out_dir: str | Path) -> list[Path]:
    """val_miou.png and loss_<term>.png (one per `loss/` term any run logged); returns the paths."""
    from .eval_plots import pyplot, save_png

    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    fig = miou_figure(runs)
    save_png(fig, out / MIOU_PNG)
    plt.close(fig)
    written.append(out / MIOU_PNG)
    terms = sorted({k for r in runs for k in r.curves if k.startswith("loss/")},
                   key=lambda k: (k != "loss/total", k != "loss/ce", k))
    for term in terms:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in runs:
            if term in run.curves:
                ax.plot(*zip(*run.curves[term]), label=run.name, linewidth=1.2)
        label = term.split("/", 1)[1]
        ax.set_xlabel("step")
        ax.set_ylabel(f"{label} (weighted, as in the total)" if label not in ("ce", "total")
                      else label)
        ax.set_title(f"Loss term {label} per step (mean over each logging window)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"loss_{_file_safe(label)}.png"
        save_png(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)

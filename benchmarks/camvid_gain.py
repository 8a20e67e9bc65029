"""Measured distillation gain on real CamVid: teacher, student baseline and distilled students.

    python benchmarks/camvid_gain.py [--data ../shared/data/camvid] [--out /tmp/camvid_gain]
    python benchmarks/camvid_gain.py --table-only            # rebuild the table from results.json

Trains (each run a `python -m segdistill_cli train ...` subprocess, so every run is isolated and
reproducible from its printed command line):
  1. the teacher  (configs/camvid_teacher.yaml, MobileNetV2 x1.0 + ASPP + decoder, --no-teacher),
  2. per seed: the student baseline (configs/camvid.yaml, MobileNetV2 x0.5, no ASPP/decoder,
     --no-teacher) and one distilled student per ARM, all with the identical recipe.
Every run's command, wall time, final val metrics and loss magnitudes go to `<out>/results.json`.
A run whose results are recorded under the same command is skipped, so an interrupted experiment
continues where it stopped. The val metrics are the FINAL epoch's (not best-of-epochs, which would
select on the val split).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = PROJECT_ROOT / "configs"

# Distillation arms: name -> (DISTILL section, tuned-after-seeing-results?). Pairs are between the
# two models' final logits (the tutorial's pair); "kl" is the class-axis KL with temperature.
ARMS: dict[str, tuple[list[dict[str, Any]], bool]] = {
    "l2_w0.1": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "l2", "WEIGHT": 0.1}], False),
    "kl_T2_w1": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "kl", "TEMPERATURE": 2,
                   "WEIGHT": 1}], False),
    "l2_w1": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "l2", "WEIGHT": 1.0}], False),
    "kl_T4_w1": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "kl", "TEMPERATURE": 4,
                   "WEIGHT": 1}], False),
    # Added after seeing the main table (docs/results.md): l2 x 0.1 (distill term ~20% of CE) was
    # the only arm above the baseline, KL x 1 (~60% of CE) was not; does KL at ~20% of CE help?
    "kl_T2_w0.3": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "kl", "TEMPERATURE": 2,
                     "WEIGHT": 0.3}], True),
    # ... and l2 between the weight that helped a little (0.1) and the one that hurt (1.0).
    "l2_w0.3": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "l2", "WEIGHT": 0.3}], True),
    # v2 (issue "gain v2"), chosen before any v2 run: DIST with the project's defaults (those of its authors'
    # segmentation code: T=1, inter 1, intra 1, weight 1) and kl T=2 x 1 restricted to the pixels where the teacher is confident.
    "dist": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "dist", "WEIGHT": 1}], False),
    "kl_T2_w1_confident": ([{"TEACHER": "logits", "STUDENT": "logits", "LOSS": "kl",
                             "TEMPERATURE": 2, "WEIGHT": 1, "MASK": "confident",
                             "THRESHOLD": 0.7}], False),
}
DEFAULT_ARMS = "l2_w0.1,kl_T2_w1"
BASELINE = "baseline"


# ---- commands ------------------------------------------------------------------------------------


def recipe_overrides(data: Path, crop: tuple[int, int], lr: float, epochs: int,
                     snapshot: int) -> list[str]:
    """`--set` overrides shared by every run (teacher and students alike, except epochs)."""
    size = f"({crop[0]},{crop[1]})"
    return [
        f"DATASET.DATA_DIR={data}", f"DATASET.TRAIN_FILE_LIST={data}/train.txt",
        f"DATASET.VAL_FILE_LIST={data}/val.txt", f"DATASET.TEST_FILE_LIST={data}/val.txt",
        f"TRAIN_CROP_SIZE={size}", f"EVAL_CROP_SIZE={size}", f"AUG.FIX_RESIZE_SIZE={size}",
        f"SOLVER.LR={lr}", f"SOLVER.NUM_EPOCHS={epochs}", f"TRAIN.SNAPSHOT_EPOCH={snapshot}",
    ]


def _flags(flag: str, overrides: list[str]) -> list[str]:
    return [part for o in overrides for part in (flag, o)]


def teacher_eval_command(args: argparse.Namespace, json_path: Path) -> list[str]:
    """--teacher-dir: the given teacher's val metrics, by the same eval the students get."""
    size = f"({args.crop[0]},{args.crop[1]})"
    sets = [f"DATASET.DATA_DIR={args.data}", f"DATASET.VAL_FILE_LIST={args.data}/val.txt",
            f"EVAL_CROP_SIZE={size}", f"AUG.FIX_RESIZE_SIZE={size}"]
    return [sys.executable, "-m", "segdistill_cli", "eval", "--cfg",
            str(CONFIGS / "camvid_teacher.yaml"), "--model-dir", str(args.teacher_dir),
            "--json", str(json_path), *_flags("--set", sets)]


def record_given_teacher(args: argparse.Namespace, results: dict[str, Any],
                         results_path: Path) -> None:
    cmd = teacher_eval_command(args, args.out / "teacher_eval.json")
    if is_done(results, "teacher", cmd):
        return
    print(f"[run ] teacher eval: {shell_line(cmd)}", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    final = json.loads((args.out / "teacher_eval.json").read_text(encoding="utf-8"))
    results["runs"]["teacher"] = {
        "command": cmd, "group": "teacher", "seed": 0, "wall_seconds": None,
        "final": {"epoch": None, **{k: final[k] for k in ("miou", "acc", "class_iou", "class_names")}}}
    save_results(results_path, results)


def teacher_command(args: argparse.Namespace, save_dir: Path) -> list[str]:
    sets = recipe_overrides(args.data, args.crop, args.lr, args.teacher_epochs,
                            max(1, args.teacher_epochs // 5))
    return [sys.executable, "-m", "segdistill_cli", "train",
            "--cfg", str(CONFIGS / "camvid_teacher.yaml"), "--no-teacher", "--seed", "0",
            "--log-steps", "10", *_flags("--set", sets + [f"TRAIN.MODEL_SAVE_DIR={save_dir}"])]


def distill_override(pairs: list[dict[str, Any]]) -> str:
    """DISTILL=[{...}] as one YAML flow value (what `--set` parses)."""
    return "DISTILL=" + json.dumps(pairs)


def few_label_lists(args: argparse.Namespace) -> tuple[Path, Path]:
    """The few-label regime's lists, written into --out: every LABEL_EVERY-th line of train.txt
    (lines 1, 1+k, 1+2k, ...) labelled, the images of all other lines unlabelled."""
    lines = [ln for ln in (args.data / "train.txt").read_text(encoding="utf-8").splitlines()
             if ln.strip()]
    labelled = [ln for i, ln in enumerate(lines) if i % args.label_every == 0]
    unlabeled = [ln.split()[0] for i, ln in enumerate(lines) if i % args.label_every != 0]
    folder = args.out / "lists"
    folder.mkdir(parents=True, exist_ok=True)
    labelled_path = folder / f"train_labelled_1of{args.label_every}.txt"
    unlabeled_path = folder / f"train_unlabeled_{args.label_every - 1}of{args.label_every}.txt"
    labelled_path.write_text("\n".join(labelled) + "\n", encoding="utf-8")
    unlabeled_path.write_text("\n".join(unlabeled) + "\n", encoding="utf-8")
    return labelled_path, unlabeled_path


def regime_overrides(args: argparse.Namespace, distilled: bool) -> list[str]:
    """Few labels: train on the labelled list only; a distilled run adds UNLABELED_PER_BATCH
    unlabelled images to each batch on top of the baseline's BATCH_SIZE labelled ones, so both
    see the same labelled images in the same order and take the same number of steps."""
    if args.regime == "full":
        return []
    labelled, unlabeled = few_label_lists(args)
    sets = [f"DATASET.TRAIN_FILE_LIST={labelled}"]
    if not distilled:
        return sets + [f"BATCH_SIZE={args.batch}"]
    return sets + [f"BATCH_SIZE={args.batch + args.unlabeled_per_batch}",
                   f"DATASET.UNLABELED_FILE_LIST={unlabeled}",
                   f"DATASET.UNLABELED_PER_BATCH={args.unlabeled_per_batch}"]


def student_command(args: argparse.Namespace, arm: str, seed: int, save_dir: Path,
                    teacher_dir: Path) -> list[str]:
    sets = recipe_overrides(args.data, args.crop, args.lr, args.epochs, args.snapshot)
    regime = regime_overrides(args, distilled=arm != BASELINE)
    if regime:  # the regime's own train list replaces the full one (one value per key)
        sets = [o for o in sets if not o.startswith("DATASET.TRAIN_FILE_LIST=")] + regime
    cmd = [sys.executable, "-m", "segdistill_cli", "train", "--cfg", str(CONFIGS / "camvid.yaml"),
           "--seed", str(seed), "--log-steps", "10"]
    if arm == BASELINE:
        return cmd + ["--no-teacher"] + _flags("--set", sets + [f"TRAIN.MODEL_SAVE_DIR={save_dir}"])
    pairs, _ = ARMS[arm]
    # Only its weights folder: distillation reads nothing else from the teacher config that the
    # recipe changes (the student config drives data, crops and schedule).
    teacher_sets = [f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={teacher_dir}"]
    return (cmd + ["--teacher-cfg", str(CONFIGS / "camvid_teacher.yaml")]
            + _flags("--set", sets + [f"TRAIN.MODEL_SAVE_DIR={save_dir}", distill_override(pairs)])
            + _flags("--teacher-set", teacher_sets))


def shell_line(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


# ---- reading a finished run ----------------------------------------------------------------------


def read_run(save_dir: Path) -> dict[str, Any]:
    """Final eval metrics and loss magnitudes (first vs last epoch means) from train_log.jsonl."""
    records = [json.loads(line) for line in
               (save_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    evals = [r for r in records if r.get("type") == "eval"]
    if not evals:
        raise RuntimeError(f"{save_dir}/train_log.jsonl has no eval record")
    final = evals[-1]
    trains = [r for r in records if r.get("type") == "train"]
    epochs = sorted({r["epoch"] for r in trains})
    return {
        "final": {k: final[k] for k in ("epoch", "miou", "acc", "class_iou", "class_names")},
        "eval_curve": [(r["epoch"], r["miou"]) for r in evals],
        "losses_first_epoch": _loss_means([r for r in trains if r["epoch"] == epochs[0]]),
        "losses_last_epoch": _loss_means([r for r in trains if r["epoch"] == epochs[-1]]),
        "step_per_sec": statistics.median(r["step_per_sec"] for r in trains) if trains else None,
    }


def _loss_means(records: list[dict[str, Any]]) -> dict[str, float]:
    keys = sorted({k for r in records for k in r if k.startswith("loss/")})
    return {k[len("loss/"):]: statistics.fmean(r[k] for r in records if k in r) for k in keys}


# ---- running -------------------------------------------------------------------------------------


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"meta": {}, "runs": {}}


def save_results(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1), encoding="utf-8")
    os.replace(tmp, path)  # atomic: an interrupted experiment never leaves a torn file


def is_done(results: dict[str, Any], name: str, cmd: list[str]) -> bool:
    """Done = results recorded for exactly this command (a changed recipe re-runs)."""
    run = results["runs"].get(name)
    return bool(run and run.get("command") == cmd and "final" in run)


def run_one(name: str, cmd: list[str], save_dir: Path, results: dict[str, Any],
            results_path: Path, group: str, seed: int) -> bool:
    """Run (or harvest) one training run; False if another invocation holds it (try later)."""
    results["runs"].update(load_results(results_path)["runs"])  # another invocation may have run it
    if is_done(results, name, cmd):
        print(f"[skip] {name}: done (mIoU {results['runs'][name]['final']['miou']:.4f})", flush=True)
        return True
    lock = claim(save_dir.parent / f"{name}.lock")
    if lock is None:
        return False
    try:
        wait_while_active(save_dir)
        results["runs"].update(load_results(results_path)["runs"])
        if is_done(results, name, cmd):  # finished by the other invocation meanwhile
            return True
        # A finished run that was never recorded (e.g. started by hand with the same command) is
        # harvested; one recorded under another command is stale and trains again.
        harvest = name not in results["runs"] and (save_dir / "final" / "meta.json").exists()
        wall = None if harvest else _train(name, cmd, save_dir)
        record = {"command": cmd, "group": group, "seed": seed, "wall_seconds": wall,
                  "load_avg_after": os.getloadavg(), **read_run(save_dir)}
        results["runs"][name] = record
        on_disk = load_results(results_path)  # re-read: a parallel invocation may have added runs
        on_disk["runs"][name] = record
        save_results(results_path, on_disk)
    finally:
        lock.unlink(missing_ok=True)
    print(f"[done] {name}: mIoU {record['final']['miou']:.4f}"
          + (f" in {wall / 60:.1f} min" if wall else ""), flush=True)
    return True


def _train(name: str, cmd: list[str], save_dir: Path) -> float:
    # An interrupted run restarts from scratch rather than resuming: runs are short, and a fresh
    # start gives exactly what an uninterrupted run with this seed gives.
    shutil.rmtree(save_dir, ignore_errors=True)
    save_dir.mkdir(parents=True)
    print(f"[run ] {name}: {shell_line(cmd)}", flush=True)
    start = time.time()
    with open(save_dir.parent / f"{name}.log", "w", encoding="utf-8") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=save_dir.parent)
        trainer_pid_file(save_dir).write_text(str(child.pid))
        code = child.wait()
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {save_dir.parent / (name + '.log')}")
    return time.time() - start


def claim(lock: Path) -> Optional[Path]:
    """Atomically create `lock` holding our pid; None if a live process holds it. Lets two
    invocations share the run list on a 2-core machine (each run is mostly single-threaded)."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or "0"), 0)
                return None  # holder alive
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # stale: its holder died
                continue
            except FileNotFoundError:
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return lock
    return None


ACTIVE_SECONDS = 120


def trainer_pid_file(save_dir: Path) -> Path:
    # Beside the run folder, not in it: train refuses to start in a folder that holds files.
    return save_dir.parent / f"{save_dir.name}.pid"


def trainer_alive(save_dir: Path) -> Optional[bool]:
    """Whether the training process this runner started for `save_dir` still exists (None: no
    pid on record, e.g. a run started by hand). A stopped (SIGSTOP) or loaded trainer is alive,
    however long its log has been silent: only its exit frees the run."""
    try:
        pid = int(trainer_pid_file(save_dir).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError):
        return None
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def wait_while_active(save_dir: Path, poll_seconds: float = 30) -> None:
    """Wait while another process may still be training `save_dir` instead of wiping it: its
    trainer (pid on record) is alive, or, for a run started by hand, its log was written in the
    last ACTIVE_SECONDS and it has no final checkpoint yet."""
    log = save_dir / "train_log.jsonl"
    while not (save_dir / "final" / "meta.json").exists():
        alive = trainer_alive(save_dir)
        if alive is False or (alive is None and not (
                log.exists() and time.time() - log.stat().st_mtime < ACTIVE_SECONDS)):
            return
        print(f"[wait] {save_dir.name} is being trained by another process", flush=True)
        time.sleep(poll_seconds)


def machine() -> dict[str, Any]:
    from _common import cpu_model  # beside this script (its folder is on sys.path when run)

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def run_experiment(args: argparse.Namespace, results: dict[str, Any], results_path: Path) -> None:
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    results.update(load_results(results_path))
    meta = results.setdefault("meta", {})
    meta.update({"machine": machine(), "data": str(args.data), "crop": list(args.crop),
                 "lr": args.lr, "epochs": args.epochs, "teacher_epochs": args.teacher_epochs,
                 "seeds": args.seeds, "regime": args.regime,
                 "teacher_dir": str(args.teacher_dir) if args.teacher_dir else None})
    if args.regime == "few":
        meta.update({"label_every": args.label_every, "batch": args.batch,
                     "unlabeled_per_batch": args.unlabeled_per_batch})
    if args.best_of:
        meta.update({"best_of": str(args.best_of), "best_of_arm": args.arms[0]})
    meta.setdefault("arms", {}).update({a: ARMS[a][0] for a in args.arms})
    meta["tuned_arms"] = sorted(set(meta.get("tuned_arms", [])) | {a for a in args.arms if ARMS[a][1]})
    meta.setdefault("started", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    save_results(results_path, results)
    teacher_dir = runs_dir / "teacher"
    if not args.arms:  # baselines only (e.g. run in parallel with the teacher): no teacher needed
        for seed in args.seeds:
            name = f"{BASELINE}_s{seed}"
            while not run_one(name, student_command(args, BASELINE, seed, runs_dir / name,
                                                    teacher_dir),
                              runs_dir / name, results, results_path, BASELINE, seed):
                time.sleep(20)
        return
    if args.teacher_dir:
        record_given_teacher(args, results, results_path)
        teacher_weights = args.teacher_dir
    else:
        while not run_one("teacher", teacher_command(args, teacher_dir), teacher_dir, results,
                          results_path, "teacher", 0):
            time.sleep(20)
        teacher_weights = teacher_dir / "final"
    # Seed-major order: if time runs out, every arm has the same seeds done. Runs held by a
    # parallel invocation are revisited until that invocation has recorded them.
    pending = [(arm, seed) for seed in args.seeds for arm in [BASELINE, *args.arms]]
    while pending:
        deferred = []
        for arm, seed in pending:
            name = f"{arm}_s{seed}"
            save_dir = runs_dir / name
            if not run_one(name, student_command(args, arm, seed, save_dir, teacher_weights),
                           save_dir, results, results_path, arm, seed):
                deferred.append((arm, seed))
        pending = deferred
        if pending:
            time.sleep(20)
    results.update(load_results(results_path))
    results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save_results(results_path, results)


# ---- the table -----------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per group: seeds, mIoU mean/std, per-class mean IoU; per arm: Δ vs baseline (unpaired
    means and paired by seed), per-class Δ, loss magnitudes (last-epoch means)."""
    runs = results["runs"]
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs.values():
        if "final" in run:
            groups.setdefault(run["group"], {})[run["seed"]] = run
    tuned = set(results.get("meta", {}).get("tuned_arms", []))
    summary: dict[str, Any] = {"teacher": None, "groups": {}}
    if "teacher" in groups:
        summary["teacher"] = next(iter(groups.pop("teacher").values()))["final"]
    base = groups.get(BASELINE, {})
    for group, by_seed in groups.items():
        seeds = sorted(by_seed)
        mious = [by_seed[s]["final"]["miou"] for s in seeds]
        class_iou = [statistics.fmean(c) for c in zip(*(by_seed[s]["final"]["class_iou"]
                                                         for s in seeds))]
        mean, std = _mean_std(mious)
        entry = {"seeds": seeds, "mious": mious, "mean": mean, "std": std, "class_iou": class_iou,
                 "tuned": group in tuned,
                 "losses": _mean_dicts([by_seed[s]["losses_last_epoch"] for s in seeds]),
                 "losses_first": _mean_dicts([by_seed[s]["losses_first_epoch"] for s in seeds])}
        if group != BASELINE and base:
            common = [s for s in seeds if s in base]
            base_mean = statistics.fmean(base[s]["final"]["miou"] for s in base)
            entry["delta"] = mean - base_mean
            if common:
                paired = [by_seed[s]["final"]["miou"] - base[s]["final"]["miou"] for s in common]
                entry["paired_delta"] = _mean_std(paired)
                entry["paired_seeds"] = common
            if common:  # per class, paired: the baseline over the same seeds as the arm
                base_class = [statistics.fmean(c) for c in
                              zip(*(base[s]["final"]["class_iou"] for s in common))]
                arm_class = [statistics.fmean(c) for c in
                             zip(*(by_seed[s]["final"]["class_iou"] for s in common))]
                entry["class_delta"] = [a - b for a, b in zip(arm_class, base_class)]
        summary["groups"][group] = entry
    return summary


def best_arm(results: dict[str, Any]) -> str:
    """The pre-registered choice for the next regime: among the arms run on every baseline seed,
    the one with the highest mean paired Δ (tuned arms included; ties: the first by name)."""
    groups = summarize(results)["groups"]
    seeds = groups.get(BASELINE, {}).get("seeds", [])
    scored = sorted((-g["paired_delta"][0], name) for name, g in groups.items()
                    if "paired_delta" in g and g["paired_seeds"] == seeds)
    if not scored:
        raise SystemExit("--best-of: no arm with paired results on every baseline seed there")
    return scored[0][1]


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: statistics.fmean(d[k] for d in dicts if k in d) for k in keys}


def _describe_arm(results: dict[str, Any], group: str) -> str:
    if group == BASELINE:
        return "student baseline (no teacher)"
    pairs = results.get("meta", {}).get("arms", {}).get(group) or ARMS.get(group, ([],))[0]
    parts = []
    for p in pairs:
        temp = f", T={p['TEMPERATURE']}" if "TEMPERATURE" in p else ""
        if p.get("MASK", "none") != "none":
            temp += f", {p['MASK']} pixels ≥ {p.get('THRESHOLD', 0.7)}"
        parts.append(f"{p['LOSS']}({p['TEACHER']}↔{p['STUDENT']}{temp}) × {p['WEIGHT']}")
    return "distilled: " + " + ".join(parts)


def markdown_table(results: dict[str, Any]) -> str:
    s = summarize(results)
    lines = ["| model | seeds | val mIoU (mean ± std) | Δ vs baseline | paired Δ (mean ± std) "
             "| distill term / CE (last epoch) |",
             "|---|---|---|---|---|---|"]
    if s["teacher"]:
        lines.append(f"| teacher (MobileNetV2 x1.0 + ASPP + decoder) | 0 | "
                     f"{s['teacher']['miou']:.4f} | | | |")
    order = [BASELINE] + sorted(g for g in s["groups"] if g != BASELINE and not s["groups"][g]["tuned"]) \
        + sorted(g for g in s["groups"] if s["groups"][g]["tuned"])
    for group in order:
        if group not in s["groups"]:
            continue
        g = s["groups"][group]
        label = _describe_arm(results, group) + (" — **tuned after seeing results**" if g["tuned"] else "")
        delta = f"{g['delta']:+.4f}" if "delta" in g else ""
        paired = (f"{g['paired_delta'][0]:+.4f} ± {g['paired_delta'][1]:.4f}"
                  if "paired_delta" in g else "")
        ratio = _distill_ratio(g["losses"])
        lines.append(f"| {label} | {','.join(map(str, g['seeds']))} | {g['mean']:.4f} ± "
                     f"{g['std']:.4f} | {delta} | {paired} | {ratio} |")
    lines += ["", per_class_table(results, s, order), "", per_seed_table(results, s, order)]
    return "\n".join(lines)


def per_seed_table(results: dict[str, Any], s: dict[str, Any], order: list[str]) -> str:
    """Each seed's final mIoU, the paired Δ to that seed's baseline in brackets, and each arm's
    mean wall time per run (measured under whatever load the machine had)."""
    arms = [g for g in order if g in s["groups"]]
    runs = {(r["group"], r["seed"]): r for r in results["runs"].values() if "final" in r}
    seeds = sorted({seed for group, seed in runs if group in arms})
    lines = ["| seed | " + " | ".join(arms) + " |", "|---" * (1 + len(arms)) + "|"]
    for seed in seeds:
        cells = []
        for arm in arms:
            run, base = runs.get((arm, seed)), runs.get((BASELINE, seed))
            if run is None:
                cells.append("—")
                continue
            miou = run["final"]["miou"]
            delta = f" ({miou - base['final']['miou']:+.4f})" if base and arm != BASELINE else ""
            cells.append(f"{miou:.4f}{delta}")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    walls = []
    for arm in arms:
        times = [r["wall_seconds"] for (g, _), r in runs.items() if g == arm and r.get("wall_seconds")]
        walls.append(f"{statistics.fmean(times) / 60:.1f} min" if times else "—")
    lines.append("| wall time per run (mean) | " + " | ".join(walls) + " |")
    return "\n".join(lines)


def _distill_ratio(losses: dict[str, float]) -> str:
    # The weighted terms only: "raw/NAME" (unweighted) and "mask/NAME" (pixel fractions) are
    # logged beside them since the masked losses.
    distill = sum(v for k, v in losses.items() if k not in ("ce", "total") and "/" not in k)
    if not distill or not losses.get("ce"):
        return ""
    return f"{distill:.4f} / {losses['ce']:.4f} = {distill / losses['ce']:.3f}"


def per_class_table(results: dict[str, Any], s: dict[str, Any], order: list[str]) -> str:
    names = _class_names(results)
    arms = [g for g in order if g in s["groups"] and g != BASELINE]
    header = "| " + " | ".join(["class", "teacher IoU", "baseline IoU"] + [f"Δ {a}" for a in arms])
    lines = [header + " |", "|---" * (3 + len(arms)) + "|"]
    base = s["groups"].get(BASELINE)
    for i, name in enumerate(names):
        teacher = f"{s['teacher']['class_iou'][i]:.3f}" if s["teacher"] else ""
        baseline = f"{base['class_iou'][i]:.3f}" if base else ""
        deltas = [f"{s['groups'][a]['class_delta'][i]:+.3f}" if "class_delta" in s["groups"][a]
                  else "" for a in arms]
        lines.append("| " + " | ".join([name, teacher, baseline, *deltas]) + " |")
    return "\n".join(lines)


def _class_names(results: dict[str, Any]) -> list[str]:
    for run in results["runs"].values():
        if "final" in run:
            return list(run["final"].get("class_names") or
                        [str(i) for i in range(len(run["final"]["class_iou"]))])
    return []


# ---- CLI -----------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "camvid")
    p.add_argument("--out", type=Path, default=Path("/tmp/camvid_gain"),
                   help="run folders and results.json (kept out of the repo: checkpoints)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated, from {', '.join(ARMS)}; 'none' = baselines only, "
                   "no teacher")
    p.add_argument("--epochs", type=int, default=5, help="student epochs (baseline and distilled)")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--snapshot", type=int, default=5, help="student eval/checkpoint every N epochs")
    p.add_argument("--crop", default="160,120", help="train and eval size W,H (images resized)")
    p.add_argument("--lr", type=float, default=0.05, help="poly LR, teacher and students")
    p.add_argument("--teacher-dir", type=Path, help="a trained teacher's weights folder: evaluate it "
                   "and distil from it instead of training a teacher")
    p.add_argument("--regime", choices=("full", "few"), default="full",
                   help="full: all train.txt labelled; few: every --label-every-th line labelled, "
                   "the others' images unlabelled (distilled runs only)")
    p.add_argument("--label-every", type=int, default=8)
    p.add_argument("--batch", type=int, default=4, help="few: labelled images per batch")
    p.add_argument("--unlabeled-per-batch", type=int, default=2,
                   help="few: unlabelled images added to a distilled run's batch")
    p.add_argument("--best-of", type=Path, help="a finished experiment's results.json: add its arm "
                   "with the highest mean paired gain to --arms (recorded in meta.best_of_arm)")
    p.add_argument("--table-only", action="store_true", help="print the table from results.json")
    p.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = p.parse_args(argv)
    args.data = args.data.resolve()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.arms = [a for a in args.arms.split(",") if a.strip() and a != "none"]
    if args.best_of:
        best = best_arm(load_results(args.best_of))
        print(f"[best] {args.best_of}: highest mean paired gain: {best}", flush=True)
        args.arms = [best] + [a for a in args.arms if a != best]
    if args.teacher_dir:
        args.teacher_dir = args.teacher_dir.resolve()
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    w, h = (int(v) for v in args.crop.split(","))
    args.crop = (w, h)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = load_results(results_path)
    if not args.table_only:
        if not (args.data / "train.txt").exists():
            raise SystemExit(f"--data {args.data}: no train.txt there (CamVid list files)")
        start = time.time()
        run_experiment(args, results, results_path)
        print(f"experiment wall time this invocation: {(time.time() - start) / 60:.1f} min")
    table = markdown_table(results)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

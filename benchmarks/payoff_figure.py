"""The same validation images as seen by several models, beside the ground truth, with a legend.

    python benchmarks/payoff_figure.py --out docs/img/camvid_models.png \
        --model "teacher (MobileNetV2 x1.0 + ASPP + decoder)=configs/camvid_teacher.yaml:../shared/models/camvid-teacher" \
        --model "student baseline=configs/camvid.yaml:RUN/final" \
        --model "student distilled=configs/camvid.yaml:RUN/final" \
        [--data ../shared/data/camvid] [--images 4] [--size 160,120]

Each model's pictures come from `segdistill predict --list L --out DIR` (the command users run,
at --size, the size the models were trained and evaluated at); this script only lays the class-id
PNGs it writes side by side. The images are --images evenly spaced lines of val.txt (the first,
then every len/N-th), chosen by position, not by how good they look.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segdistill_cli.palettes import builtin_class_names, colorize, palette  # noqa: E402


def pick_lines(val_list: Path, count: int) -> list[str]:
    lines = [ln for ln in val_list.read_text(encoding="utf-8").splitlines() if ln.strip()]
    step = max(1, len(lines) // count)
    return lines[::step][:count]


def predict(name: str, config: Path, weights: Path, list_file: Path, data: Path,
            size: tuple[int, int], out: Path) -> Path:
    wh = f"({size[0]},{size[1]})"
    cmd = [sys.executable, "-m", "segdistill_cli", "predict", "--cfg", str(config),
           "--model-dir", str(weights), "--list", str(list_file), "--out", str(out),
           "--set", f"DATASET.DATA_DIR={data}", "--set", f"EVAL_CROP_SIZE={wh}",
           "--set", f"AUG.FIX_RESIZE_SIZE={wh}"]
    print(f"[predict] {name}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out / "pred"


def read_ids(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def draw(rows: list[dict[str, np.ndarray]], columns: list[str], names: list[str],
         colors: np.ndarray, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                             figsize=(2.6 * len(columns), 2.0 * len(rows) + 1.1))
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(row[column])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column, fontsize=9)
    handles = [Patch(color=np.asarray(colors[i]) / 255.0, label=n) for i, n in enumerate(names)]
    handles.append(Patch(color="black", label="void (not scored)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.09, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="LABEL=CONFIG:WEIGHTS (repeat)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--size", default="160,120")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.split(","))
    data = args.data.resolve()
    lines = pick_lines(data / "val.txt", args.images)
    names = builtin_class_names(11)
    colors = palette(11)
    with tempfile.TemporaryDirectory(prefix="segdistill-figure-") as tmp:
        list_file = Path(tmp) / "images.txt"
        list_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        models = []
        for i, spec in enumerate(args.model):
            label, _, rest = spec.partition("=")
            config, _, weights = rest.partition(":")
            models.append((label, predict(label, Path(config).resolve(), Path(weights).resolve(),
                                          list_file, data, size, Path(tmp) / f"m{i}")))
        rows = []
        for line in lines:
            image_rel, label_rel = line.split()[:2]
            written = Path(image_rel).with_suffix(".png")  # predict keeps the list's relative path
            from PIL import Image

            image = np.asarray(Image.open(data / image_rel).convert("RGB").resize(size))
            label = np.asarray(Image.open(data / label_rel).resize(size, Image.NEAREST))
            row = {"image": image, "ground truth": colorize(label, colors)}
            for model_label, pred_dir in models:
                pred = read_ids(pred_dir / written)
                row[model_label] = colorize(np.asarray(Image.fromarray(pred).resize(size, Image.NEAREST)),
                                            colors)
            rows.append(row)
    columns = ["image"] + [m[0] for m in models] + ["ground truth"]
    draw(rows, columns, names, colors, args.out,
         f"CamVid val, {len(rows)} images evenly spaced in val.txt, at {size[0]}×{size[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pictures a person can read: the predict overlay's layout and the eval plots (no model needed;
the overlay of real CamVid predictions is checked in test_predict_export.py)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from segdistill_cli.eval_plots import CELL_FONT_PT, confusion_figure, write_plots
from segdistill_cli.overlay import BACKGROUND, GAP, MIN_PANEL_HEIGHT, draw_overlay
from segdistill_cli.palettes import CITYSCAPES_CLASSES, palette

from conftest import ROOT



def _maps(height: int, width: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, classes, (height, width))
    label = pred.copy()
    label[: height // 4] = 255  # ignored
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return rgb, pred, label


def test_small_images_are_enlarged_to_be_seen():
    """The demo's 64x64 scenes were 192x64 strips: each panel is now >= MIN_PANEL_HEIGHT high,
    every pixel enlarged to a whole block (a block is still one class)."""
    rgb, pred, label = _maps(64, 64, 5)
    overlay = draw_overlay(rgb, pred, palette(5), [f"c{i}" for i in range(5)], label)
    assert overlay.scale == 4
    x, y, w, h = overlay.panels[1].box
    assert (w, h) == (256, 256) and h >= MIN_PANEL_HEIGHT
    panel = overlay.image[y:y + h, x:x + w]
    np.testing.assert_array_equal(panel[::4, ::4], palette(5)[pred])
    np.testing.assert_array_equal(panel[3::4, 3::4], palette(5)[pred])


def test_legend_of_many_classes_wraps_inside_the_picture():
    rgb, pred, label = _maps(40, 60, 19)
    overlay = draw_overlay(rgb, pred, palette(19), CITYSCAPES_CLASSES, label)
    picture = overlay.image
    bottom = max(y + h for _, y, _, h in (p.box for p in overlay.panels))
    legend = picture[bottom:]
    for _, color in overlay.legend:  # every swatch is drawn, none cut off at the right
        assert (legend == color).all(axis=-1).any(), color
    assert (legend[:, -GAP:] == BACKGROUND).all()
    assert legend.shape[0] > 2 * (overlay.image.shape[0] - bottom) // 3  # several legend rows


def test_confusion_numbers_fit_their_cells_at_a_readable_size():
    """19 classes (Cityscapes) at the saved size: every number at >= 10 pt and inside its cell
    (they were 6 pt)."""
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 50, (19, 19)) + np.diag(rng.integers(500, 5000, 19))
    fig = confusion_figure(matrix, CITYSCAPES_CLASSES, "title")
    try:
        fig.set_dpi(100)  # the dpi the PNG is saved at
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        cells = [t for t in ax.texts]
        assert len(cells) > 200 and CELL_FONT_PT >= 10  # values under 0.005 are left blank
        cell_px = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
        for text in cells:
            assert text.get_fontsize() >= 10
            box = text.get_window_extent(renderer)
            assert box.width < cell_px and box.height < cell_px
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_eval_plot_title_names_the_model_the_list_and_the_images(tmp_path):
    from segdistill_cli.commands.eval_cmd import plot_title
    from segdistill_cli.config import load_configs
    from segdistill_cli.engine.metrics import ConfusionMatrix
    from segdistill_cli.model_choice import choose_model

    teacher_cfg = ROOT / "configs" / "camvid_teacher.yaml"
    choice = choose_model(load_configs(teacher_cfg), "weights/best_model")
    result = SimpleNamespace(num_images=101, tta=False, class_names=["a", "b"],
                             matrix=ConfusionMatrix.from_matrix(np.array([[5, 1], [2, 7]])))
    title = plot_title(result, choice)
    assert title == (f"model {teacher_cfg}, weights weights/best_model\n"
                     f"{choice.cfg.DATASET.VAL_FILE_LIST}, 101 images")
    paths = write_plots(result, tmp_path, title=title)
    for path in paths:
        with Image.open(path) as image:
            assert image.width >= 600 and image.height >= 400

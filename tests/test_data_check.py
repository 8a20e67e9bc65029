"""Pre-flight data validation and `segdistill data check` (library and CLI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdistill_cli.cli import main
from segdistill_cli.config import load_config
from segdistill_cli.data import check_data, require_valid_data, write_synthetic_dataset
from segdistill_cli.errors import SegDistillError

from conftest import CAMVID, ROOT



def _sets(root: Path, train: str = "train.list") -> list[str]:
    return [f"DATASET.DATA_DIR={root}", f"DATASET.TRAIN_FILE_LIST={root / train}",
            f"DATASET.VAL_FILE_LIST={root / 'val.list'}", f"DATASET.TEST_FILE_LIST={root / 'val.list'}",
            "DATASET.NUM_CLASSES=5", "DATASET.IGNORE_INDEX=255",
            "TRAIN_CROP_SIZE=(32, 32)", "EVAL_CROP_SIZE=(48, 40)"]


@pytest.fixture()
def broken(tmp_path):
    """A synthetic set whose train list has one problem per kind, on known lines."""
    write_synthetic_dataset(tmp_path, n_train=8, n_val=2, size=(48, 40), seed=1)
    lines = (tmp_path / "train.list").read_text().splitlines()
    image, label = lines[2].split()
    lines[2] = f"images/train/nope.png {label}"                        # line 3: missing image
    lines[3] = lines[3].split()[0]                                      # line 4: one field
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    lines[4] = f"{lines[4].split()[0]} small.png"                       # line 5: size mismatch
    bad_values = np.zeros((40, 48), np.uint8)
    bad_values[5, 5] = 200
    Image.fromarray(bad_values).save(tmp_path / "label200.png")
    lines[6] = f"{lines[6].split()[0]} label200.png"                   # line 7: label value 200
    (tmp_path / "broken.list").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_each_problem_names_its_line(broken):
    cfg = load_config(None, _sets(broken, "broken.list"))
    report = check_data(cfg, ["train"])
    assert not report.ok and report.issue_count == 4
    found = {i.line_no: i.reason for i in report.issues}
    assert all(i.list_file.endswith("broken.list") for i in report.issues)
    assert set(found) == {3, 4, 5, 7}
    assert "image not found" in found[3] and "nope.png" in found[3]
    assert "found 1 field" in found[4]
    assert "size mismatch" in found[5] and "10x10" in found[5]
    assert "200" in found[7] and "[0, 5)" in found[7]
    assert check_data(cfg, ["train"], max_errors=2).issues == report.issues[:2]
    # Every line was checked: the message must not call it a sample.
    with pytest.raises(SegDistillError, match=r"^4 bad line\(s\) among 8 lines checked; first: "
                                              r".*broken\.list:3: image not found"):
        require_valid_data(cfg, ["train"])
    sampled = check_data(cfg, ["train"], sample=6)  # 6 of the parsed lines + the unparsable one
    assert sampled.sampled and not report.sampled
    assert "bad line(s) among 7 sampled lines checked; first: " in sampled.summary()


def test_valid_synthetic_set_and_sampling(broken):
    cfg = load_config(None, _sets(broken))
    report = require_valid_data(cfg, ["all"])
    assert report.ok and report.total_checked == 10  # train 8 + val 2 (test = val, counted once)
    assert set(report.label_values) <= {0, 1, 2, 3, 4, 255}
    assert check_data(cfg, ["train"], sample=3).total_checked == 3
    assert report.summary().startswith("10 lines checked in ")
    assert check_data(cfg, ["train"], sample=3).summary().startswith("3 sampled lines checked in ")


def test_missing_list_file_is_an_error(tmp_path):
    cfg = load_config(None, _sets(tmp_path))
    with pytest.raises(SegDistillError, match=r"TRAIN_FILE_LIST \(--set\): list file not found"):
        require_valid_data(cfg, ["train"])


def test_cli_data_check_fails_on_broken_list(broken, capsys):
    code = main(["data", "check", "--cfg", str(ROOT / "configs" / "demo.yaml"), "--split", "train",
                 *sum((["--set", s] for s in _sets(broken, "broken.list")), [])])
    err = capsys.readouterr().err
    assert code == 2  # bad input data: exit 2 like every input problem
    assert "broken.list:3: image not found" in err and "broken.list:7: label values 200" in err
    assert "error: 4 bad line(s) among 8 lines checked; first:" in err


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID}")
@pytest.mark.camvid
def test_cli_data_check_passes_on_camvid(capsys):
    sets = [f"DATASET.DATA_DIR={CAMVID}", f"DATASET.TRAIN_FILE_LIST={CAMVID / 'train.txt'}",
            f"DATASET.VAL_FILE_LIST={CAMVID / 'val.txt'}", f"DATASET.TEST_FILE_LIST={CAMVID / 'val.txt'}"]
    code = main(["data", "check", "--cfg", str(ROOT / "configs" / "camvid.yaml"),
                 *sum((["--set", s] for s in sets), [])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("ok 468 lines checked in ") and out.count("ok") == 1

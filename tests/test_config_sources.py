"""Every config message names where the value came from (`--set`, `--teacher-set`, `file.yaml:LINE`);
every config problem is reported at once, one line each, before the filesystem ones; a key given on
the side that does not read it is an error (or, carried by a legacy YAML, a warning) — never
silently without effect."""
from __future__ import annotations

from pathlib import Path

import pytest

from segdistill_cli.cli import main
from segdistill_cli.config import load_configs, validate

from conftest import ROOT

CAMVID = ROOT / "configs" / "camvid.yaml"
CAMVID_TEACHER = ROOT / "configs" / "camvid_teacher.yaml"
TEACHER_DIR = "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR"


def errors_of(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# ---- item 7: the source of a value ---------------------------------------------------------------


@pytest.mark.parametrize("override,key", [
    ("DATASET.TRAIN_FILE_LIST=nonexist/train.txt", "DATASET.TRAIN_FILE_LIST"),
    ("SOLVER.LOSS=[dice_loss]", "SOLVER.LOSS"),
    ("MODEL.FP16=true", "MODEL.FP16"),
])
def test_a_set_value_is_reported_as_from_set(override, key, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["config", "check", "--cfg", str(CAMVID), "--set", override]) == 2
    errors = errors_of(capsys)
    assert [e for e in errors if e.startswith(f"error: {key} (--set): ")], errors
    assert not [e for e in errors if key in e and "camvid.yaml" in e], errors


def test_a_teacher_set_value_is_reported_as_from_teacher_set(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert main(["config", "check", "--cfg", str(CAMVID), "--teacher-cfg", str(CAMVID_TEACHER),
                 "--teacher-set", f"{TEACHER_DIR}={tmp_path / 'nope'}"]) == 2
    errors = errors_of(capsys)
    assert errors == [f"error: {TEACHER_DIR} (--teacher-set): directory not found: "
                      f"{tmp_path / 'nope'} (legacy would have distilled from a random teacher)"]


def test_file_values_name_their_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = CAMVID.read_text().replace('TRAIN_FILE_LIST: "../shared/data/camvid/train.txt"',
                                      'TRAIN_FILE_LIST: "nowhere/train.txt"')
    path = tmp_path / "s.yaml"
    path.write_text(text + "QQQQ: 1\n")
    assert main(["config", "check", "--cfg", str(path)]) == 2
    errors = errors_of(capsys)
    assert errors == [
        f"error: QQQQ ({path}:{line_of(path, 'QQQQ')}): unknown config key "
        "'QQQQ'",
        f"error: DATASET.TRAIN_FILE_LIST ({path}:{line_of(path, 'nowhere/train.txt')}): list file "
        "not found: nowhere/train.txt",
    ]


# ---- item 8: every problem at once, config first -----------------------------------------------


def test_every_config_problem_then_the_filesystem_ones_one_line_each(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.chdir(ROOT)
    path = tmp_path / "s.yaml"
    path.write_text(CAMVID.read_text().replace("BATCH_SIZE: 4", "BATCH_SIZE: four")
                    .replace("    NUM_EPOCHS: 2", "    NUM_EPOCHS: 2\n    LRR: 0.1")
                    .replace("../shared/data/camvid/val.txt", "nowhere/val.txt"))
    for command in (["config", "check"], ["train", "--no-teacher", "--preflight"]):
        assert main([*command, "--cfg", str(path)]) == 2
        errors = errors_of(capsys)
        assert [e.split(" (")[0] for e in errors] == [
            "error: BATCH_SIZE", "error: SOLVER.LRR", "error: DATASET.VAL_FILE_LIST"], errors
        assert "expected an integer" in errors[0] and "did you mean SOLVER.LR?" in errors[1]


def test_both_configs_problems_are_reported_together(capsys):
    assert main(["config", "show", "--cfg", str(CAMVID), "--teacher-cfg", str(CAMVID_TEACHER),
                 "--set", "SOLVER.LR=fast", "--teacher-set", "MODEL.DEEPLAB.BACKBONE=resnet"]) == 2
    errors = errors_of(capsys)
    assert [e.split(":")[1].strip() for e in errors] == [
        "SOLVER.LR (--set)", "MODEL.DEEPLAB.BACKBONE (--teacher-set)"], errors


# ---- item 2: keys read from one side only ------------------------------------------------------


def _problems(student_sets=(), teacher_sets=(), student=CAMVID, teacher=CAMVID_TEACHER, **kw):
    configs = load_configs(student, teacher, list(student_sets), list(teacher_sets))
    return validate(configs, "train", **kw)


def test_teacher_folder_given_on_the_student_side_is_an_error_showing_teacher_set():
    found = [p for p in _problems([f"{TEACHER_DIR}=pretrained/x"]) if p.key == TEACHER_DIR
             and p.source == "--set"]
    assert len(found) == 1 and found[0].fatal
    assert f"--teacher-set {TEACHER_DIR}=pretrained/x" in str(found[0])
    # The same key in the student YAML while distilling: an error too, naming its line.
    assert [p for p in _problems(student=CAMVID_TEACHER) if p.key == TEACHER_DIR
            and p.source.startswith(f"{CAMVID_TEACHER}:") and p.fatal]


def test_a_key_the_teacher_side_does_not_read_is_an_error_when_typed():
    found = [p for p in _problems(teacher_sets=["SOLVER.LR=0.5", "DISTILL=[]"]) if p.fatal
             and p.source == "--teacher-set"]
    assert sorted(p.key for p in found) == ["DISTILL", "SOLVER.LR"]
    assert "use --set SOLVER.LR=" in str([p for p in found if p.key == "SOLVER.LR"][0])
    # What the teacher side reads is fine to set there.
    assert not [p for p in _problems(teacher_sets=["MODEL.DEEPLAB.OUTPUT_STRIDE=8"])
                if p.source == "--teacher-set"]


def test_a_differing_training_key_in_the_teacher_yaml_is_a_warning(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(CAMVID_TEACHER.read_text() + "BATCH_SIZE: 32\n")
    found = [p for p in _problems(teacher=path) if p.key == "BATCH_SIZE"]
    assert len(found) == 1 and not found[0].fatal and "student's 4" in found[0].message


def test_no_teacher_makes_teacher_settings_errors_or_warnings():
    found = _problems(teacher_sets=["MODEL.DEEPLAB.OUTPUT_STRIDE=8"], use_teacher=False)
    assert [(p.key, p.fatal) for p in found if p.source == "--teacher-set"] == [
        ("MODEL.DEEPLAB.OUTPUT_STRIDE", True)]
    found = _problems(use_teacher=False)
    assert [(p.key, p.fatal) for p in found if p.key == "--teacher-cfg"] == [("--teacher-cfg", False)]


@pytest.mark.parametrize("student,teacher", [("cityscape.yaml", "cityscape_teacher.yaml"),
                                             ("camvid.yaml", "camvid_teacher.yaml"),
                                             ("demo.yaml", "demo_teacher.yaml")])
def test_repository_config_pairs_have_no_one_side_problems(student, teacher):
    from segdistill_cli.config.one_side import check_one_side

    configs = load_configs(ROOT / "configs" / student, ROOT / "configs" / teacher)
    assert check_one_side(configs, distilling=True, training=True) == []


def test_train_refuses_the_teacher_folder_on_the_student_side_before_step_one(capsys, tmp_path,
                                                                              monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["train", "--cfg", str(CAMVID), "--teacher-cfg", str(CAMVID_TEACHER),
                 "--set", f"{TEACHER_DIR}={tmp_path}", "--set",
                 f"TRAIN.MODEL_SAVE_DIR={tmp_path / 'run'}"])
    assert code == 2
    errors = errors_of(capsys)
    assert f"error: {TEACHER_DIR} (--set): the teacher's weights folder is read from the teacher " \
           f"config, not the student's; give it as --teacher-set {TEACHER_DIR}={tmp_path}" in errors
    assert not (tmp_path / "run").exists()


# ---- keys no command reads (config/unread.py) ---------------------------------------------------


def test_a_given_image_count_that_differs_from_the_list_is_refused(capsys, monkeypatch, tmp_path):
    """Legacy's TRAIN_TOTAL_IMAGES looks like it sizes the LR schedule; the schedule counts the
    list. A differing value is one error naming its source; the true count is accepted."""
    monkeypatch.chdir(ROOT)
    train_images = len([l for l in (ROOT.parent / "shared" / "data" / "camvid" / "train.txt")
                        .read_text().splitlines() if l.strip()])
    assert main(["config", "check", "--cfg", str(CAMVID), "--set",
                 "DATASET.TRAIN_TOTAL_IMAGES=2975"]) == 2
    assert errors_of(capsys) == [
        "error: DATASET.TRAIN_TOTAL_IMAGES (--set): 2975, but the LR schedule counts "
        f"{train_images} images an epoch from DATASET.TRAIN_FILE_LIST: this key is a count, not "
        "a setting (remove it)"]
    assert main(["config", "check", "--cfg", str(CAMVID), "--set",
                 f"DATASET.TRAIN_TOTAL_IMAGES={train_images}"]) == 0
    path = tmp_path / "s.yaml"
    path.write_text(CAMVID.read_text().replace("DATASET:\n", "DATASET:\n    VAL_TOTAL_IMAGES: 500\n"))
    assert main(["train", "--no-teacher", "--preflight", "--cfg", str(path)]) == 2
    errors = errors_of(capsys)
    assert [e.split(": 500, but")[0] for e in errors] == [
        f"error: DATASET.VAL_TOTAL_IMAGES ({path}:{line_of(path, 'VAL_TOTAL_IMAGES')})"], errors


UNREAD_VALUES = [("NUM_TRAINERS", "2"), ("TRAINER_ID", "1"),
                 ("SLIM.KNOWLEDGE_DISTILL", "true"), ("DATASET.TEST_TOTAL_IMAGES", "7"),
                 ("DATASET.VIS_FILE_LIST", "vis.txt"), ("SOLVER.LOSS_WEIGHT.DICE_LOSS", "2.0"),
                 ("MODEL.MULTI_LOSS_WEIGHT", "[1.0, 0.4]"), ("MODEL.SCALE_LOSS", "8.0"),
                 ("MODEL.DEFAULT_GROUP_NUMBER", "16"), ("MODEL.HRNET.STAGE2.NUM_MODULES", "2"),
                 ("MODEL.ICNET.LAYERS", "101"), ("FREEZE.SAVE_DIR", "frozen"),
                 ("SLIM.NAS_PORT", "1"), ("SLIM.PRUNE_PARAMS", "conv1"), ("SLIM.PREPROCESS", "true")]


@pytest.mark.parametrize("key,value", UNREAD_VALUES, ids=[k for k, _ in UNREAD_VALUES])
def test_an_unread_key_is_an_error_when_typed_and_a_warning_in_a_yaml(key, value, tmp_path):
    typed = [p for p in _problems([f"{key}={value}"]) if p.key == key]
    assert [(p.source, p.fatal) for p in typed] == [("--set", True)], typed
    assert "has no effect" in typed[0].message
    path = tmp_path / "s.yaml"
    section, _, leaf = key.rpartition(".")
    nested = "".join(f"{'    ' * i}{part}:\n" for i, part in enumerate(section.split("."))
                     ) if section else ""
    path.write_text(CAMVID.read_text() + nested + f"{'    ' * (key.count('.'))}{leaf}: {value}\n")
    in_file = [p for p in _problems(student=path) if p.key == key]
    last_line = len(path.read_text().splitlines())
    assert [(p.source, p.fatal) for p in in_file] == [(f"{path}:{last_line}", False)], in_file
    assert not [p for p in _problems() if p.key == key]  # the default value says nothing


def test_the_unread_table_names_real_keys_and_the_teacher_side_is_checked_too():
    from segdistill_cli.config.schema import _ALL_KEYS
    from segdistill_cli.config.unread import UNREAD

    for name in UNREAD:  # a typo here would silently switch a check off
        assert any(k == name or (name.endswith((".", "_")) and k.startswith(name))
                   for k in _ALL_KEYS), name
    found = [p for p in _problems(teacher_sets=["MODEL.SCALE_LOSS=8.0"]) if p.key ==
             "MODEL.SCALE_LOSS"]
    assert [(p.source, p.fatal) for p in found] == [("--teacher-set", True)]


@pytest.mark.parametrize("override,fragment", [
    ("SOLVER.LOSS_WEIGHT.SOFTMAX_LOSS=2.0", "weighted cross-entropy is not implemented"),
    ("DATASET.DATA_DIM=4", "derived from IMAGE_TYPE"),
    ("DATASET.PADDING_VALUE=[0.0, 0.0, 0.0]", "derived from MEAN x 255"),
])
def test_keys_that_would_change_the_result_are_refused(override, fragment, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    key = override.split("=")[0]
    assert main(["config", "check", "--cfg", str(CAMVID), "--set", override]) == 2
    errors = errors_of(capsys)
    assert len(errors) == 1 and errors[0].startswith(f"error: {key} (--set): ") \
        and fragment in errors[0], errors

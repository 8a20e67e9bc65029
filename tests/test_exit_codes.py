"""The exit-code rule (README "Exit codes"), command by command: usage, config and input problems
exit 2, failures while working 1, Ctrl-C 130 — each with exactly one `error:` line on stderr, never
a traceback or a box. Every case runs in process and stops before any real work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from segdistill_cli.cli import main

from conftest import ROOT

STUDENT = str(ROOT / "configs" / "demo.yaml")
TEACHER = str(ROOT / "configs" / "demo_teacher.yaml")
CAMVID_CFG = str(ROOT / "configs" / "camvid.yaml")  # its lists point at ../shared/data/camvid
COMMANDS = ["demo", "fetch", "inspect-vars", "train", "eval", "predict", "export", "compare",
            "data check", "data cityscapes", "data lists", "config show", "config check"]


def _run(capsys, args: list[str]) -> tuple[int, list[str]]:
    code = main(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_one_line_exit_2(command, capsys):
    code, err = _run(capsys, [*command.split(), "--no-such-option"])
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: No such option: --no-such-option"), err
    assert f"segdistill {command} --help" in err[0]


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export", "inspect-vars",
                                     "data check", "config show", "config check"])
def test_missing_config_file_exits_2(command, capsys, tmp_path):
    extra = {"predict": ["--out", str(tmp_path / "p")], "export": ["--out", str(tmp_path / "e")]}
    code, err = _run(capsys, [*command.split(), "--cfg", str(tmp_path / "nope.yaml"),
                              *extra.get(command, [])])
    assert (code, err) == (2, [f"error: config file not found: {tmp_path / 'nope.yaml'}"])


def _files(tmp_path: Path) -> dict[str, Path]:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.pdparams").write_bytes(b"not a pickle")
    # A segdistill checkpoint whose weights file no longer matches the sha256 in its meta.json.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.pdparams").write_bytes(b"0123456789")
    (damaged / "meta.json").write_text(json.dumps(
        {"epoch": 1, "files": {"model.pdparams": {"size": 10, "sha256": "0" * 64}}}))
    return {"foreign": foreign, "corrupt": corrupt, "damaged": damaged,
            "missing": tmp_path / "missing"}


def camvid_preflight_with_teacher(folder: str) -> list[str]:
    """`train --preflight` of the CamVid pair with the teacher weights in `folder`."""
    return ["train", "--cfg", CAMVID_CFG, "--teacher-cfg",
            str(ROOT / "configs" / "camvid_teacher.yaml"), "--preflight",
            "--teacher-set", f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={folder}"]


# (name, argv with {placeholders}, exit code, a fragment of the one error line)
CASES = [
    ("demo: --out holds foreign files", ["demo", "--out", "{foreign}"], 2, "not written by"),
    ("fetch: unknown model", ["fetch", "nosuchmodel", "--dest", "{missing}"], 2, "unknown"),
    ("fetch: --from file missing", ["fetch", "student", "--dest", "{missing}", "--from",
                                    "student={missing}/x.tgz"], 2, "file not found"),
    ("inspect-vars: --suggest without teacher", ["inspect-vars", "--cfg", STUDENT, "--suggest"],
     2, "--suggest needs --teacher-cfg"),
    ("train: --gpus on the CPU build", ["train", "--cfg", STUDENT, "--teacher-cfg", TEACHER,
                                        "--gpus", "0,1"], 2, "CPU-only build"),
    ("train: missing teacher folder", camvid_preflight_with_teacher("{missing}"),
     2, "KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR"),
    ("train: --overwrite with --resume", ["train", "--cfg", STUDENT, "--no-teacher",
                                          "--overwrite", "--resume", "auto"], 2, "contradict"),
    ("eval: missing --model-dir", ["eval", "--cfg", CAMVID_CFG, "--check-data", "off",
                                   "--model-dir", "{missing}"], 2, "model dir not found"),
    # A corrupt weights file is exit 1 on every path: unpickling fails, or the checksum the
    # pre-flight checks differs (eval, export, the teacher of train).
    ("eval: corrupt weights", ["eval", "--cfg", CAMVID_CFG, "--check-data", "off", "--model-dir",
                               "{corrupt}"], 1, "corrupt"),
    ("eval: damaged checkpoint", ["eval", "--cfg", CAMVID_CFG, "--check-data", "off",
                                  "--model-dir", "{damaged}"], 1, "checkpoint file damaged"),
    ("export: damaged checkpoint", ["export", "--cfg", CAMVID_CFG, "--model-dir", "{damaged}",
                                    "--out", "{missing}/e"], 1, "checkpoint file damaged"),
    ("train: damaged teacher checkpoint", camvid_preflight_with_teacher("{damaged}"), 1,
     "checkpoint file damaged"),
    ("predict: missing image", ["predict", "--cfg", STUDENT, "--model-dir", "{missing}",
                                "--image", "{missing}/a.png", "--out", "{missing}/o"],
     2, "file not found"),
    ("export: --out holds foreign files", ["export", "--cfg", STUDENT, "--model-dir", "{corrupt}",
                                           "--out", "{foreign}"], 2, "not a segdistill export"),
    ("compare: not a run folder", ["compare", "{missing}"], 2, "not a directory"),
    ("data check: missing list", ["data", "check", "--cfg", STUDENT, "--set",
                                  "DATASET.TRAIN_FILE_LIST={missing}/t.txt", "--split", "train"],
     2, "list file not found"),
    ("data cityscapes: not Cityscapes", ["data", "cityscapes", "{foreign}"], 2,
     "does not look like Cityscapes"),
    ("data lists: missing folder", ["data", "lists", "{foreign}", "--images", "{missing}",
                                    "--labels", "{missing}"], 2, "not found"),
    ("config check: missing list", ["config", "check", "--cfg", CAMVID_CFG, "--set",
                                    "DATASET.TRAIN_FILE_LIST={missing}/t.txt"], 2, "t.txt"),
    ("config show: unknown key", ["config", "show", "--cfg", STUDENT, "--set", "SOLVER.LRR=1"],
     2, "unknown config key"),
]


@pytest.mark.parametrize("name,argv,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_error_paths_follow_the_rule(name, argv, code, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    files = _files(tmp_path)
    args = [a.format(**files) for a in argv]
    got, err = _run(capsys, args)
    assert got == code, err
    errors = [line for line in err if line.startswith("error")]
    assert len(errors) == 1 and fragment in errors[0], err
    assert not any("Traceback" in line for line in err)
    assert (files["foreign"] / "precious.txt").read_text() == "mine"  # nothing clobbered


def test_every_command_is_covered():
    covered = {" ".join(c[1][:2]) if c[1][0] in ("data", "config") else c[1][0] for c in CASES}
    assert covered == set(COMMANDS)


def test_ctrl_c_anywhere_in_a_command_is_130_with_one_line(capsys, monkeypatch):
    import segdistill_cli.commands.config_cmd as config_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(config_cmd, "read_configs", interrupted)
    code, err = _run(capsys, ["config", "show", "--cfg", STUDENT])
    assert (code, err) == (130, ["interrupted"])


@pytest.mark.parametrize("args", [[], ["data"], ["config"]])
def test_a_group_without_its_subcommand_prints_its_help_and_exits_2(args, capsys):
    """The same on every click: click 8.2 raises NoArgsIsHelpError, click 8.1 (the last for
    Python 3.8 and 3.9) printed the help and returned 0."""
    from segdistill_cli.cli import main

    assert main(args) == 2
    assert f"Usage: {' '.join(['segdistill', *args])} [OPTIONS] COMMAND" in capsys.readouterr().out
    assert main([*args, "--help"]) == 0  # the control: asking for help is no error

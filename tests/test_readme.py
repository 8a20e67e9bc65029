"""The README's set-up commands stay true: CI runs the README's test command verbatim."""
from conftest import ROOT, legacy_ir_only


def _indented_commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("       python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    readme_commands = _indented_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(readme_commands) == 2, readme_commands
    demo, tests = readme_commands
    assert demo.endswith("segdistill demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci
    # ... and on the Paddle 3 stack, the way the README tells a user to get it.
    assert '".[cpu,test]"' in tests and '".[paddle3,test]"' in ci
    assert "replace `cpu` by `paddle3`" in " ".join((ROOT / "README.md").read_text().split())


def test_every_config_file_says_what_it_is_for():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert path.read_text(encoding="utf-8").startswith("#"), path


def _commands_with(option: str) -> set[str]:
    """Every (sub)command of the CLI that takes `option`."""
    from segdistill_cli.cli import build_command

    found = set()

    def walk(command, path):
        if any(option in getattr(p, "opts", []) for p in command.params):
            found.add(" ".join(path))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(build_command(), [])
    return found


def test_readme_names_exactly_the_commands_that_take_a_teacher_config():
    """README once said every command that reads configs takes --teacher-cfg; export and data
    check do not."""
    import re

    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    match = re.search(r"those where a teacher matters \(([^)]*)\) also take `--teacher-cfg` and "
                      r"`--teacher-set KEY=VALUE`, while (.*?) read the student config only", text)
    assert match, "the README sentence on --teacher-cfg is missing"
    takes, student_only = (set(re.findall(r"`([a-z -]+)`", group)) for group in match.groups())
    assert takes == _commands_with("--teacher-cfg")
    assert student_only == _commands_with("--cfg") - takes == {"export", "data check"}


def test_readme_prediction_path_example_is_what_predict_writes(tmp_path):
    """The list's subfolders are kept in the output names (README said pred/<name>.png)."""
    import re

    from segdistill_cli.config import load_config
    from segdistill_cli.predict import collect_inputs

    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    match = re.search(r"CamVid's `([^`]+)` gives `pred/([^`]+)\.png`", text)
    assert match, "the README example of a prediction path is missing"
    image, written = match.groups()
    camvid = ROOT.parent / "shared" / "data" / "camvid"
    line = next(line for line in (camvid / "val.txt").read_text().splitlines()
                if line.startswith(image)) if camvid.is_dir() else f"{image} {image}"
    list_file = tmp_path / "list.txt"
    list_file.write_text(line + "\n")
    cfg = load_config(None, [f"DATASET.DATA_DIR={camvid}"])
    (item,) = collect_inputs(cfg, list_file=str(list_file))
    assert item.name == written == "val/0016E5_07959"


@legacy_ir_only("Paddle 3 no longer warns about fluid's broadcasting on a static `a * b`")
def test_pytest_really_filters_paddles_broadcast_warnings(tmp_path):
    """pyproject's filter once never matched (Paddle's message starts with the caller's file and
    line): ~60 warnings per suite. A static `a * b` warns; under the project's settings, silently."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_mul.py").write_text(
        "import segdistill_cli\n"
        "from segdistill_cli.paddle_env import import_paddle\n"
        "def test_mul():\n"
        "    paddle = import_paddle()\n"
        "    with paddle.static.program_guard(paddle.static.Program()):\n"
        "        x = paddle.static.data('x', [-1, 3], 'float32')\n"
        "        y = x * x\n")

    def run(*extra: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
                               *extra, str(tmp_path / "test_mul.py")],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    quiet = run()
    assert "1 passed in" in quiet and "warning" not in quiet
    assert "The behavior of expression" in run("-o", "filterwarnings=")  # the negative control

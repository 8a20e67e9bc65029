"""The README's set-up commands stay true: CI runs the README's test command verbatim."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _indented_commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("       python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    readme_commands = _indented_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(readme_commands) == 2, readme_commands
    demo, tests = readme_commands
    assert demo.endswith("segdistill demo")
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_config_file_says_what_it_is_for():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert path.read_text(encoding="utf-8").startswith("#"), path

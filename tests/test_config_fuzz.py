"""Bad-config fuzz: the tutorial and CamVid YAMLs under a few hundred seeded random mutations (wrong
types, unknown keys, deleted sections, garbage bytes, huge numbers, truncation, empty files,
non-UTF-8). Each ends with exit 0 or 2 and one error line per problem: never a traceback, never
exit 1, never the same line twice; a mutation that makes one problem gives exactly one line,
naming the key and `file.yaml:LINE`. In process (`config check`), a few seconds."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from segdistill_cli.cli import main
from segdistill_cli.config.schema import _PAIR_KEYS, _default

from conftest import ROOT

SOURCES = ["cityscape.yaml", "cityscape_teacher.yaml", "camvid.yaml", "camvid_teacher.yaml"]
MUTATIONS_PER_KIND = 10  # x 4 sources x 8 kinds = 320 mutations
SEED = 20261201


def leaf_lines(text: str) -> list[tuple[str, int]]:
    """(dotted key, 1-based line) of every scalar leaf of a YAML mapping text."""
    out = []

    def walk(node: Any, prefix: str) -> None:
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, key + ".")
            elif isinstance(value_node, yaml.ScalarNode) and \
                    key_node.start_mark.line == value_node.start_mark.line:
                out.append((key, key_node.start_mark.line + 1))

    walk(yaml.compose(text), "")
    return out


def wrong_value(key: str) -> str:
    """A YAML value of the wrong type for `key`."""
    default = _default(key) if key != "DISTILL" else []
    if key in _PAIR_KEYS or isinstance(default, (bool, int, float, list, tuple)) or default is None:
        return '"not-a-number-or-list"' if not isinstance(default, bool) else "maybe"
    return "{x: 1}"  # a string key given a mapping


def mutate_wrong_type(text: str, rng: random.Random) -> tuple[str, int, str]:
    key, line = rng.choice(leaf_lines(text))
    lines = text.split("\n")
    head = lines[line - 1].split(":", 1)[0]
    lines[line - 1] = f"{head}: {wrong_value(key)}"
    return "\n".join(lines), line, key


def mutate_unknown_key(text: str, rng: random.Random) -> tuple[str, int, str]:
    lines = text.split("\n")
    sections = [i for i, l in enumerate(lines) if l and not l[0].isspace() and l.rstrip().endswith(":")
                and i + 1 < len(lines) and lines[i + 1][:1] == " "
                and not lines[i + 1].lstrip().startswith("-")]  # a mapping, not DISTILL's list
    name = f"BOGUS_{rng.randrange(10**6)}"
    if sections and rng.random() < 0.5:
        i = rng.choice(sections)
        indent = lines[i + 1][:len(lines[i + 1]) - len(lines[i + 1].lstrip())]
        lines.insert(i + 1, f"{indent}{name}: 1")
        return "\n".join(lines), i + 2, f"{lines[i].split(':')[0]}.{name}"
    lines.insert(0, f"{name}: 1")
    return "\n".join(lines), 1, name


def mutate_delete_section(text: str, rng: random.Random) -> str:
    data = yaml.safe_load(text)
    del data[rng.choice(sorted(data))]
    return yaml.safe_dump(data)


def mutate_huge_number(text: str, rng: random.Random) -> str:
    numeric = [(k, n) for k, n in leaf_lines(text)
               if isinstance(_default(k), (int, float)) and not isinstance(_default(k), bool)]
    key, line = rng.choice(numeric)
    lines = text.split("\n")
    head = lines[line - 1].split(":", 1)[0]
    lines[line - 1] = f"{head}: {rng.choice(['1e400', '-1e400', str(10**40), str(-10**40), '.nan'])}"
    return "\n".join(lines)


def garbage(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))
    return data[:at] + noise + data[at:]


def non_utf8(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80\x80"]) + data[at:]


def truncated(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def run_check(path: Path, capsys) -> tuple[int, list[str]]:
    code = main(["config", "check", "--cfg", str(path), "--purpose", "any"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code in (0, 2), (code, err)
    assert all(line.startswith(("error: ", "warning: ")) for line in err), err
    assert len(set(err)) == len(err), err  # one line per problem, never repeated
    errors = [line for line in err if line.startswith("error: ")]
    assert (code == 2) == bool(errors), (code, err)
    return code, errors


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return {name: (ROOT / "configs" / name).read_text(encoding="utf-8") for name in SOURCES}


def test_sources_are_valid_before_mutation(texts, tmp_path, capsys):
    for name, text in texts.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        assert run_check(path, capsys) == (0, [])


@pytest.mark.parametrize("kind", ["wrong_type", "unknown_key"])
def test_one_problem_mutations_give_exactly_one_line_with_key_and_line(kind, texts, tmp_path,
                                                                         capsys):
    rng = random.Random(f"{SEED}-{kind}")
    mutate: Callable = {"wrong_type": mutate_wrong_type, "unknown_key": mutate_unknown_key}[kind]
    for i in range(MUTATIONS_PER_KIND * len(SOURCES)):
        name = SOURCES[i % len(SOURCES)]
        text, line, key = mutate(texts[name], rng)
        path = tmp_path / f"{i}-{name}"
        path.write_text(text, encoding="utf-8")
        code, errors = run_check(path, capsys)
        assert code == 2 and len(errors) == 1, (text, errors)
        assert errors[0].startswith(f"error: {key} ({path}:{line}): "), (errors, key, line)


@pytest.mark.parametrize("kind", ["delete_section", "huge_number", "garbage", "non_utf8",
                                  "truncated", "empty"])
def test_other_mutations_end_with_0_or_2_and_clean_lines(kind, texts, tmp_path, capsys):
    rng = random.Random(f"{SEED}-{kind}")
    seen_codes = set()
    for i in range(MUTATIONS_PER_KIND * len(SOURCES)):
        name = SOURCES[i % len(SOURCES)]
        data = texts[name].encode("utf-8")
        if kind == "delete_section":
            data = mutate_delete_section(texts[name], rng).encode()
        elif kind == "huge_number":
            data = mutate_huge_number(texts[name], rng).encode()
        elif kind == "empty":
            data = b"" if i % 2 == 0 else b"\n# only a comment\n"
        else:
            data = {"garbage": garbage, "non_utf8": non_utf8, "truncated": truncated}[kind](data, rng)
        path = tmp_path / f"{i}-{name}"
        path.write_bytes(data)
        code, errors = run_check(path, capsys)
        seen_codes.add(code)
        if kind == "non_utf8":
            assert errors and errors[0].startswith(f"error: {path}:") and "not UTF-8" in errors[0]
        if kind == "empty":  # the defaults lack the crop sizes: exactly those two problems
            assert [e.split(" (")[0] for e in errors] == ["error: TRAIN_CROP_SIZE",
                                                          "error: EVAL_CROP_SIZE"], errors
    if kind in ("garbage", "truncated", "delete_section"):
        assert seen_codes == {0, 2}, seen_codes  # the mutations do both: the test can tell

"""`segdistill inspect-vars` and the listing / diff / suggestion logic behind it."""
from __future__ import annotations

import json
from pathlib import Path



from segdistill_cli.cli import main
from segdistill_cli.errors import ConfigError
from segdistill_cli.inspect import VarInfo, filter_vars, suggest_pairs

ROOT = Path(__file__).resolve().parents[1]
STUDENT = str(ROOT / "configs" / "cityscape.yaml")
TEACHER = str(ROOT / "configs" / "cityscape_teacher.yaml")


def _var(name, shape, alias=None, op="relu", persistable=False, position=0):
    return VarInfo(name, name.removeprefix("teacher_"), tuple(shape), "float32", op, persistable,
                   alias, position)


def test_json_schema_and_tutorial_first_pair(capsys):
    code = main(["inspect-vars", "--cfg", STUDENT, "--teacher-cfg", TEACHER, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"student", "teacher", "pairs"}
    assert data["teacher"]["prefix"] == "teacher_"
    keys = {"name", "shape", "dtype", "op", "persistable", "alias"}
    assert all(keys <= set(v) for v in data["student"]["vars"])
    assert all((keys | {"program_name"}) <= set(v) for v in data["teacher"]["vars"])
    # Default listing: activations only; teacher names carry the merge prefix.
    assert not any(v["persistable"] for v in data["student"]["vars"] + data["teacher"]["vars"])
    teacher_names = {v["name"] for v in data["teacher"]["vars"]}
    assert "teacher_bilinear_interp_v2_2.tmp_0" in teacher_names
    by_name = {v["name"]: v for v in data["teacher"]["vars"]}
    logits = by_name["teacher_bilinear_interp_v2_2.tmp_0"]
    assert logits["program_name"] == "bilinear_interp_v2_2.tmp_0" and logits["alias"] == "logits"
    assert logits["op"] == "bilinear_interp_v2" and logits["shape"] == [-1, 19, 769, 769]
    first = data["pairs"][0]
    assert first["teacher"] == "teacher_bilinear_interp_v2_2.tmp_0"
    assert first["student"] == "bilinear_interp_v2_0.tmp_0"
    assert first["shape_match"] is True and first["reason"]
    assert first["distill"] == {"TEACHER": "logits", "STUDENT": "logits", "LOSS": "l2", "WEIGHT": 0.1}
    # Shape-matching pairs are ranked before the ones that need an adapter.
    matches = [p["shape_match"] for p in data["pairs"]]
    assert matches == sorted(matches, reverse=True) and False in matches
    adapted = next(p for p in data["pairs"] if not p["shape_match"])
    assert adapted["distill"]["ADAPTER"] == "conv1x1"
    assert data["build_seconds"] < 10


def test_params_grep_and_op_filters(capsys):
    code = main(["inspect-vars", "--cfg", STUDENT, "--json", "--params", "--grep", "^conv8_1_linear"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["teacher"] is None and data["pairs"] == []
    names = {v["name"] for v in data["student"]["vars"]}
    assert {"conv8_1_linear_weights", "conv8_1_linear_bn_mean"} <= names
    assert all(n.startswith("conv8_1_linear") for n in names)
    code = main(["inspect-vars", "--cfg", STUDENT, "--json", "--op", "bilinear_interp_v2"])
    data = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in data["student"]["vars"]] == ["bilinear_interp_v2_0.tmp_0"]


def test_suggest_prints_ready_to_paste_block(capsys):
    code = main(["inspect-vars", "--cfg", STUDENT, "--teacher-cfg", TEACHER, "--suggest",
                 "--top", "2", "--grep", "^$"])
    out = capsys.readouterr().out
    assert code == 0
    block = out[out.index("DISTILL:"):]
    assert block.split("\n")[:5] == ["DISTILL:", "- TEACHER: logits", "  STUDENT: logits",
                                     "  LOSS: l2", "  WEIGHT: 0.1"]
    assert "#3" not in out


def test_suggest_needs_a_teacher_and_bad_regex_is_a_config_error(capsys):
    assert main(["inspect-vars", "--cfg", STUDENT, "--suggest"]) == ConfigError.exit_code
    assert "--teacher-cfg" in capsys.readouterr().err
    assert main(["inspect-vars", "--cfg", STUDENT, "--grep", "("]) == ConfigError.exit_code


def test_filter_vars_unit():
    infos = [_var("relu_0.tmp_0", [-1, 8, 4, 4], alias="backbone.out"),
             _var("conv1_weights", [8, 3, 3, 3], op=None, persistable=True),
             _var("concat_0.tmp_0", [-1, 16, 4, 4], op="concat")]
    assert [v.name for v in filter_vars(infos)] == ["relu_0.tmp_0", "concat_0.tmp_0"]
    assert [v.name for v in filter_vars(infos, params=True)] == [v.name for v in infos]
    assert [v.name for v in filter_vars(infos, grep="backbone")] == ["relu_0.tmp_0"]  # alias match
    assert [v.name for v in filter_vars(infos, op="concat")] == ["concat_0.tmp_0"]


def test_suggest_pairs_ranking_unit():
    student = [_var("s_feat", [-1, 32, 8, 8], alias="backbone.out", position=1),
               _var("s_same", [-1, 64, 16, 16], position=2),
               _var("s_same_later", [-1, 64, 16, 16], position=3),
               _var("s_logits", [-1, 5, 64, 64], alias="logits", op="bilinear_interp_v2", position=4)]
    teacher = [_var("teacher_t_feat", [-1, 256, 8, 8], alias="backbone.out", position=1),
               _var("teacher_t_same", [-1, 64, 16, 16], position=2),
               _var("teacher_t_logits", [-1, 5, 64, 64], alias="logits", op="bilinear_interp_v2",
                    position=3)]
    pairs = suggest_pairs(student, teacher, (64, 64))
    assert [(p.teacher.name, p.student.name) for p in pairs] == [
        ("teacher_t_logits", "s_logits"),     # equal shape, same alias
        ("teacher_t_same", "s_same_later"),   # equal shape, deepest representative
        ("teacher_t_feat", "s_feat"),         # same spatial size, adapter needed
    ]
    assert pairs[0].weight == 0.1 and pairs[0].adapter is None
    assert pairs[2].adapter == "conv1x1" and "stride 1/8" in pairs[2].reason
    assert pairs[2].distill_entry() == {"TEACHER": "backbone.out", "STUDENT": "backbone.out",
                                        "LOSS": "l2", "WEIGHT": 1.0, "ADAPTER": "conv1x1"}
    assert pairs[1].distill_entry()["TEACHER"] == "teacher_t_same"  # raw names: merged spelling

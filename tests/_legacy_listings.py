"""The inspect-vars listings of the demo and tutorial pairs as Paddle 2.6.2's legacy IR builds
them, kept as fixtures in tests/legacy_listings/ so that another stack (Paddle 3's PIR) can be
compared with them. Generated, never edited by hand: on Paddle 2.6.2 run

    PYTHONPATH=. python tests/_legacy_listings.py

(tests/test_legacy_names.py fails on 2.6.2 when a fixture no longer equals what the code builds).
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "tests" / "legacy_listings"
# name -> (student config, teacher config, student --set overrides). The tutorial pair at a
# CPU-sized odd crop (like its 769 = 48 * 16 + 1), so every ceil in the shapes is exercised.
PAIRS = {
    "demo": ("configs/demo.yaml", "configs/demo_teacher.yaml", []),
    "cityscape_129": ("configs/cityscape.yaml", "configs/cityscape_teacher.yaml",
                      ["TRAIN_CROP_SIZE=(129, 129)"]),
}


def configs(pair: str):
    from segdistill_cli.config import load_configs

    student, teacher, sets = PAIRS[pair]
    return load_configs(ROOT / student, ROOT / teacher, sets, [])


def listing(inspection: Any) -> dict[str, Any]:
    """What `inspect-vars --json --params` prints, less the timing."""
    data = inspection.to_json(params=True)
    data.pop("build_seconds")
    return data


@functools.lru_cache(maxsize=None)  # several tests compare with it; callers must not mutate it
def legacy_listing(pair: str) -> dict[str, Any]:
    """The listing the legacy IR builds now (the code inspect-vars runs)."""
    from segdistill_cli.inspect import inspect_configs

    pair_configs = configs(pair)
    return listing(inspect_configs(pair_configs.student, pair_configs.teacher))


def fixture_path(pair: str) -> Path:
    return FOLDER / f"{pair}.json"


def load_fixture(pair: str) -> dict[str, Any]:
    return json.loads(fixture_path(pair).read_text(encoding="utf-8"))


def generate(what: str, names: Iterable[str], write: Callable[[str, str], Path]) -> int:
    """Write each fixture with `write(name, paddle version)`; only on Paddle 2.6 (exit 2 else)."""
    from segdistill_cli.paddle_env import import_paddle  # zlib before Paddle

    paddle = import_paddle(any_ir=True)  # says below why another stack cannot make them
    if not paddle.__version__.startswith("2.6."):
        print(f"the fixtures are Paddle 2.6.2's {what}; this is Paddle {paddle.__version__}",
              file=sys.stderr)
        return 2
    for name in names:
        print(write(name, paddle.__version__))
    return 0


def _write_listing(pair: str, paddle_version: str) -> Path:
    from segdistill_cli.atomic import write_text_atomic

    text = json.dumps({"paddle": paddle_version, **legacy_listing(pair)}, separators=(",", ":"))
    # One variable (or pair) per line: diffs of a regenerated fixture stay readable.
    write_text_atomic(fixture_path(pair), text.replace("},{", "},\n{") + "\n")
    return fixture_path(pair)


def main() -> int:
    return generate("listings", PAIRS, _write_listing)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

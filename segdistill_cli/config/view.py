"""What `config show` prints: a config with the values the commands actually use.

Two keys differ from the stored config:
* `DISTILL`: absent means the tutorial's pair, so the student shows that pair (`distill_pairs`,
  the property `train` reads). The teacher's view leaves the key out: only the student's is read.
* `DATASET.TRAIN_TOTAL_IMAGES` / `VAL_TOTAL_IMAGES`: legacy counted the list files; segdistill
  uses the real samples. TRAIN is the image count the LR schedule is built from, computed by the
  same code `train` runs (`data.mixed.train_set` + `schedule_images`: the train list's length, or
  with unlabelled images the count whose schedule has the steps really run); VAL is the val
  list's length as every eval reads it (`read_entries`). A key is left out (with a note) when
  its list cannot be read. `TEST_TOTAL_IMAGES` is read by no command and is left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SegDistillError
from .loader import SegConfig

# Count key -> the list key whose samples it counts.
COUNTED_LISTS = {"TRAIN_TOTAL_IMAGES": "TRAIN_FILE_LIST", "VAL_TOTAL_IMAGES": "VAL_FILE_LIST"}
UNUSED_COUNTS = ("TEST_TOTAL_IMAGES",)


@dataclass
class ConfigView:
    """The printable config and why any count key is missing from it."""

    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def used_values(cfg: SegConfig, role: str, train_images: int | None = None) -> ConfigView:
    """`cfg` as plain data, with DISTILL and the image counts as the commands use them
    (`train_images`: the count a running train already handed to its LR schedule)."""
    data = cfg.to_plain()
    view = ConfigView(data)
    if role == "student":
        data["DISTILL"] = cfg.distill_pairs
    else:
        data.pop("DISTILL", None)
    dataset = data["DATASET"]
    for count_key, list_key in COUNTED_LISTS.items():
        try:
            dataset[count_key] = (train_images if count_key == "TRAIN_TOTAL_IMAGES" and
                                  train_images is not None else image_count(cfg, count_key))
        except (OSError, SegDistillError) as exc:
            del dataset[count_key]
            view.notes.append(f"{role}: DATASET.{count_key} left out: the list "
                              f"DATASET.{list_key} cannot be read ({exc})")
    for key in UNUSED_COUNTS:
        dataset.pop(key, None)
    return view


def image_count(cfg: SegConfig, count_key: str) -> int:
    """The value a command uses for `count_key` (raises OSError / SegDistillError when its list
    cannot be read)."""
    from ..data.dataset import read_entries
    from ..data.mixed import schedule_images, train_set

    if count_key == "TRAIN_TOTAL_IMAGES":  # what train hands to the LR schedule (one trainer)
        return schedule_images(train_set(cfg, (0, 1), 0, int(cfg.BATCH_SIZE)))
    return len(read_entries(cfg, cfg.DATASET[COUNTED_LISTS[count_key]]))

"""Class labels of image-text data on disk (JSONL, COCO): ``label/<field>`` in batches, the
name -> id mapping (sorted over every split, or ``data.class_names``), missing labels, errors
that name the file and line, and the zero-shot prompts built from ``data.prompt_templates``."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.formats import LabelReader, read_coco, read_jsonl
from datamodules.image_text import DEFAULT_PROMPT_TEMPLATES
from modules.registry import as_dataclass
from tests.tiny_modules import setup_with_words

COLORS = {"a.png": (255, 0, 0), "b.png": (0, 255, 0), "c.png": (0, 0, 255), "d.png": (9, 9, 9)}
# train has no "fox"; val adds it: the sorted classes over both are bird, cat, dog, fox
TRAIN = [
    {"image": "a.png", "caption": "a red dog", "label": "dog"},
    {"image": "b.png", "caption": "a green cat", "label": "cat"},
    {"image": "c.png", "caption": "a blue bird", "label": "bird"},
    {"image": "d.png", "caption": "a grey thing"},  # no label
]
VAL = [
    {"image": "a.png", "captions": ["a red fox", "a fox"], "label": "fox"},
    {"image": "b.png", "caption": "a green cat", "label": "cat"},
    {"image": "c.png", "caption": "a blue thing", "label": None},  # no label
]
CLASSES = ["bird", "cat", "dog", "fox"]


def _write(root, splits: dict[str, list]) -> None:
    """PNGs under ``img/`` and one JSONL manifest per split (strings are written as they are)."""
    (root / "img").mkdir(exist_ok=True)
    for name, rgb in COLORS.items():
        Image.new("RGB", (10, 8), rgb).save(root / "img" / name)
    for split, lines in splits.items():
        text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
        (root / f"{split}.jsonl").write_text(text + "\n")


def _config(root, **overrides) -> ImageTextDataConfig:
    return ImageTextDataConfig(
        **{
            "format": "jsonl",
            "root": str(root),
            **{f"{split}_images": "img" for split in ("train", "val", "test")},
            "image_size": 8,
            "batch_size": 2,
            "eval_batch_size": 8,
            **overrides,
        }
    )


def _module(root, **overrides) -> ImageTextDataModule:
    return ImageTextDataModule(_config(root, **overrides))


def _labels(dm: ImageTextDataModule, split: str, field: str = "label") -> list[int]:
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    return torch.cat([batch[f"label/{field}"] for batch in loader]).tolist()


def test_string_labels_map_to_sorted_names_of_every_split(tmp_path):
    _write(tmp_path, {"train": TRAIN, "val": VAL})
    dm = _module(tmp_path)
    setup_with_words(dm, "fit")
    assert dm.label_classes() == {"label": CLASSES}
    assert dm.class_retrieval_labels == ("label",)
    # val pairs: the fox's two captions, the cat, the unlabelled item
    assert _labels(dm, "val") == [3, 3, 1, -1]
    train = dm.datasets["train"]
    assert [train[i]["label/label"] for i in range(4)] == [2, 1, 0, -1]
    batch = next(iter(dm.train_dataloader()))
    assert batch["label/label"].dtype == torch.long and batch["label/label"].shape == (2,)
    # a run that reads only val (tokenizer given) keeps the ids: classes come from every split
    other = ImageTextDataModule(_config(tmp_path), tokenizer=dm.tokenizer)
    setup_with_words(other, "validate")
    assert "train" not in other.datasets and _labels(other, "val") == [3, 3, 1, -1]


def test_class_names_fix_the_order_and_unknown_names_are_errors(tmp_path):
    _write(tmp_path, {"train": TRAIN, "val": VAL})
    names = ["fox", "dog", "cat", "bird", "cow"]
    dm = _module(tmp_path, class_names={"label": names})
    setup_with_words(dm, "fit")
    assert dm.label_classes() == {"label": names}
    assert _labels(dm, "val") == [0, 0, 2, -1]
    assert len(dm.zero_shot_tasks["label"]) == 5  # a named class need not occur
    dm = _module(tmp_path, class_names={"label": ["dog", "cat", "bird"]})
    with pytest.raises(ValueError) as err:
        setup_with_words(dm, "fit")
    message = str(err.value)
    assert f"{tmp_path / 'val.jsonl'}:1:" in message  # the first line with "fox"
    assert "'fox'" in message and "data.class_names.label" in message


def test_integer_labels_are_ids_and_checked_against_class_names(tmp_path):
    lines = [
        {"image": "a.png", "caption": "red", "kind": 2},
        {"image": "b.png", "caption": "green", "kind": 0},
        {"image": "c.png", "caption": "blue"},
    ]
    _write(tmp_path, {"train": lines, "val": lines})
    dm = _module(tmp_path, label_fields=["kind"])
    setup_with_words(dm, "fit")
    assert dm.label_classes() == {"kind": None} and _labels(dm, "val", "kind") == [2, 0, -1]
    assert dm.class_retrieval_labels == ("kind",) and dm.zero_shot_tasks == {}
    dm = _module(tmp_path, label_fields=["kind"], class_names={"kind": ["x", "y", "z"]})
    setup_with_words(dm, "fit")
    first = [prompts[0] for prompts in dm.zero_shot_tasks["kind"]]
    assert first == ["a photo of a x.", "a photo of a y.", "a photo of a z."]
    dm = _module(tmp_path, label_fields=["kind"], class_names={"kind": ["x", "y"]})
    with pytest.raises(ValueError, match=r"train\.jsonl:1: label 'kind' is class id 2, but"):
        setup_with_words(dm, "fit")


def test_several_label_fields_and_missing_ones(tmp_path):
    lines = [
        {"image": "a.png", "caption": "red", "label": "dog", "place": "park"},
        {"image": "b.png", "caption": "green", "place": "home"},
        {"image": "c.png", "caption": "blue", "label": "cat"},
    ]
    _write(tmp_path, {"train": lines, "val": lines})
    dm = _module(tmp_path, label_fields=["label", "place"])
    setup_with_words(dm, "fit")
    assert dm.label_classes() == {"label": ["cat", "dog"], "place": ["home", "park"]}
    assert _labels(dm, "val", "label") == [1, -1, 0]
    assert _labels(dm, "val", "place") == [1, 0, -1]
    assert dm.class_retrieval_labels == ("label", "place")
    # a field named in the YAML that no entry has is a mistake, not an empty task
    with pytest.raises(ValueError, match=r"data.label_fields names 'colour', but no entry"):
        _module(tmp_path, label_fields=["label", "colour"]).setup("fit")
    # unset label_fields: "label" only where the data has it
    _write(
        tmp_path,
        {
            "train": [{"image": "a.png", "caption": "x"}],
            "val": [{"image": "b.png", "caption": "y"}],
        },
    )
    dm = _module(tmp_path, batch_size=1)
    setup_with_words(dm, "fit")
    assert dm.label_classes() == {} and dm.zero_shot_tasks == {}
    assert dm.class_retrieval_labels == ()
    assert not any(key.startswith("label/") for key in next(iter(dm.val_dataloader())))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"label": 1.5}, r"val\.jsonl:2: label 'label' must be a class name or a non-negative"),
        ({"label": -1}, r"val\.jsonl:2: label 'label' must be a class name"),
        ({"label": ""}, r"val\.jsonl:2: label 'label' must be a class name"),
        ({"label": 3}, r"val\.jsonl:2: label 'label' mixes class names and class ids \('cat' at"),
        (
            {"label": "dog", "image": "a.png"},
            r"val\.jsonl:2: label 'label' is 'dog', but an earlier entry of the same item gave "
            r"'cat'",
        ),
    ],
)
def test_bad_label_values_name_file_and_line(tmp_path, line, message):
    lines = [{"image": "a.png", "caption": "x", "label": "cat"}]
    lines.append({"image": "b.png", "caption": "y", **line})
    _write(tmp_path, {"train": TRAIN, "val": lines})
    with pytest.raises(ValueError, match=message):
        _module(tmp_path).setup("fit")


def test_zero_shot_prompts_one_list_per_class_in_id_order(tmp_path):
    _write(tmp_path, {"train": TRAIN, "val": VAL})
    dm = _module(tmp_path)
    tasks = dm.zero_shot_tasks  # before setup: reads the manifests itself
    assert list(tasks) == ["label"] and len(tasks["label"]) == len(CLASSES)
    for name, prompts in zip(CLASSES, tasks["label"], strict=True):
        assert prompts == [t.replace("{c}", name) for t in DEFAULT_PROMPT_TEMPLATES]
    assert tasks["label"][0][1] == "a blurry photo of a bird."
    assert 5 <= len(DEFAULT_PROMPT_TEMPLATES) <= 20
    templates = ["{c}", "itap of a {c}."]
    dm = _module(tmp_path, prompt_templates=templates, class_names={"label": ["big dog", "cat"]})
    assert dm.zero_shot_tasks == {
        "label": [["big dog", "itap of a big dog."], ["cat", "itap of a cat."]]
    }
    with pytest.raises(ValueError, match=r"prompt_templates .* with \{c\} in each"):
        _config(tmp_path, prompt_templates=["a photo of a {}."])
    with pytest.raises(ValueError, match=r"class_names has fields \['kind'\] not in"):
        _config(tmp_path, class_names={"kind": ["a"]})
    with pytest.raises(ValueError, match="built-in data has its own labels"):
        ImageTextDataConfig(label_fields=["label"])
    # the YAML form of the same settings
    cfg = as_dataclass(
        ImageTextDataConfig,
        {
            "format": "jsonl",
            "root": str(tmp_path),
            "label_fields": ["label"],
            "class_names": {"label": ["dog", "cat"]},
            "prompt_templates": ["a photo of a {c}."],
        },
    )
    assert cfg.class_names == {"label": ["dog", "cat"]} and cfg.label_fields == ["label"]


def test_built_in_data_keeps_one_prompt_per_class(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    dm = ImageTextDataModule(ImageTextDataConfig(num_train=8, num_val=4, num_test=4))
    tasks = dm.zero_shot_tasks
    assert set(tasks) == {"shape", "color", "count"}
    assert all(isinstance(prompt, str) for prompts in tasks.values() for prompt in prompts)
    assert dm.class_retrieval_labels == ("shape", "color")


def test_coco_labels_on_images_or_caption_annotations(tmp_path):
    _write(tmp_path, {})
    ann = {
        "images": [
            {"id": 1, "file_name": "a.png", "label": "dog"},
            {"id": 2, "file_name": "b.png"},
            {"id": 3, "file_name": "c.png"},
            {"id": 4, "file_name": "d.png", "label": "eel"},  # no caption: left out
        ],
        "annotations": [
            {"image_id": 1, "caption": "a red dog", "category_id": 18},
            {"image_id": 2, "caption": "a green cat", "category_id": 17, "label": "cat"},
            {"image_id": 1, "caption": "red", "label": "dog"},
            {"image_id": 3, "caption": "blue"},
        ],
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
    }
    (tmp_path / "annotations").mkdir()
    for split in ("train", "val"):
        path = tmp_path / "annotations" / f"captions_{split}.json"
        path.write_text(json.dumps(ann))
    dm = _module(tmp_path, format="coco", label_fields=["label", "category_id"])
    setup_with_words(dm, "fit")
    assert dm.label_classes() == {"label": ["cat", "dog"], "category_id": ["cat", "dog"]}
    assert _labels(dm, "val", "label") == [1, 1, 0, -1]  # caption pairs, image-major
    assert _labels(dm, "val", "category_id") == [1, 1, 0, -1]
    ann["annotations"][2]["label"] = "cat"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"bad\.json: annotations\[2\]: label 'label' is 'cat'"):
        read_coco(bad, tmp_path, LabelReader(["label"]))
    ann["annotations"][2]["label"] = "dog"
    ann["annotations"][3]["category_id"] = 99
    bad.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"annotations\[3\]: category_id 99 is not in"):
        read_coco(bad, tmp_path, LabelReader(["category_id"]))


def test_reader_columns_follow_item_order_and_pooled_lines(tmp_path):
    lines = [
        {"image": "a.png", "caption": "x", "id": 7},
        {"image": "b.png", "caption": "y", "label": "b"},
        {"image": "a.png", "caption": "z", "id": 7, "label": "a"},  # the label comes late
    ]
    _write(tmp_path, {"m": lines})
    reader = LabelReader(["label"])
    files = read_jsonl(tmp_path / "m.jsonl", tmp_path / "img", reader)
    column = reader.columns(key.decode() for key in files.keys)["label"]
    assert column.values == ["b", "a"] and column.codes.tolist() == [1, 0]
    assert column.places == [f"{tmp_path / 'm.jsonl'}:2", f"{tmp_path / 'm.jsonl'}:3"]
    assert column.ids("label", ["a", "b"]).tolist() == [0, 1]
    assert read_jsonl(tmp_path / "m.jsonl", tmp_path / "img").captions.num_items == 2

"""Built-in chest data (determinism, cache, findings in the pixels and the reports, imbalance,
views, boxes), report section parsing, the medical-report datamodule's batch contract, and the
MIMIC-CXR / IU-Xray readers."""

from __future__ import annotations

import csv
import json
import pickle
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded import chest
from datamodules.embedded.chest import FINDINGS, ChestConfig, generate_split
from datamodules.errors import DataError, DataFileMissing
from datamodules.formats.reports import parse_report, select_sections
from datamodules.media import MediaError
from datamodules.medical_report import MedicalReportDataConfig, MedicalReportDataModule
from modules.registry import DATAMODULES
from modules.towers.tokenizer import WordTokenizer, split_words
from tests.tiny_modules import setup_with_words

TINY = dict(num_train=40, num_val=12, num_test=12)
KEYWORDS = {
    "nodule": {"nodule"},
    "opacity": {"opacity", "consolidation"},
    "effusion": {"effusion"},
    "cardiomegaly": {"heart", "cardiac", "cardiomegaly"},
    "pneumothorax": {"pneumothorax"},
}
ZONE_WORDS = {"upper": {"upper"}, "middle": {"mid", "middle"}, "lower": {"lower"}}
NEGATION = {"no", "without", "normal"}


@pytest.fixture(scope="module")
def studies() -> tuple[np.ndarray, dict]:
    return generate_split(ChestConfig(num_val=500), "val")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    return tmp_path


def _sentences(text: str) -> list[list[str]]:
    return [split_words(s) for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def _frontal_regions(arrays: dict) -> list[tuple[int, int, np.ndarray, str]]:
    """(study, finding id, box, phrase) of each region on a frontal view."""
    study = np.searchsorted(arrays["view_offsets"], arrays["region_image"], side="right") - 1
    frontal = arrays["view_kind"][arrays["region_image"]] == 0
    phrases = [p.decode() for p in arrays["region_phrase"]]
    return [
        (int(study[r]), int(arrays["region_finding"][r]), arrays["region_box"][r], phrases[r])
        for r in np.flatnonzero(frontal)
    ]


def _pixels(box: np.ndarray, size: int) -> tuple[slice, slice]:
    x0, y0, x1, y1 = np.round(box * size).astype(int)
    return slice(y0, y1), slice(x0, x1)


# ------------------------------------------------------------------ generator


def test_generation_is_deterministic_and_seeded():
    cfg = ChestConfig(**TINY)
    images, arrays = generate_split(cfg, "train")
    images2, arrays2 = generate_split(cfg, "train")
    assert images.dtype == np.uint8 and images.shape[1:] == (64, 64)
    assert images.shape[0] == arrays["view_offsets"][-1] >= 40
    assert np.array_equal(images, images2)
    assert all(np.array_equal(arrays[k], arrays2[k]) for k in arrays)
    other, other_arrays = generate_split(replace(cfg, seed=1), "train")
    assert not np.array_equal(arrays["reports"], other_arrays["reports"])
    assert cfg.key() != replace(cfg, seed=1).key() and cfg.key() == ChestConfig(**TINY).key()


def test_cache_is_written_once_and_reused(cache, monkeypatch):
    cfg = ChestConfig(**TINY)
    path = chest.ensure_chest(cfg, cache)
    assert path == cache / "data" / f"chest-{cfg.key()}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    mtimes = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(chest, "generate_split", fail)
    dm = MedicalReportDataModule(MedicalReportDataConfig(**TINY))  # cache from ALIGNLAB_CACHE
    dm.prepare_data()
    setup_with_words(dm)
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == mtimes
    split = chest.load_split(path, "train")
    assert isinstance(split.images, np.memmap) and split.num_studies == 40
    with pytest.raises(AssertionError, match="regenerated"):
        chest.ensure_chest(replace(cfg, seed=3), cache)


def test_prevalence_is_imbalanced_and_some_studies_have_two_views(studies):
    _, arrays = studies
    labels, offsets, kind = arrays["labels"], arrays["view_offsets"], arrays["view_kind"]
    per_study = labels.sum(1)
    assert 0.5 < (per_study == 0).mean() < 0.7 and per_study.max() == 2
    prevalence = labels.mean(0)
    assert prevalence.min() > 0 and prevalence.max() > 2 * prevalence.min()
    counts = np.diff(offsets)
    assert set(counts) == {1, 2} and 0.2 < (counts == 2).mean() < 0.4
    assert (kind[offsets[:-1]] == 0).all()  # frontal first
    assert (kind[offsets[:-1][counts == 2] + 1] == 1).all()
    regions_per_study = np.bincount(
        np.searchsorted(offsets, arrays["region_image"], side="right") - 1, minlength=len(labels)
    )
    assert np.array_equal(regions_per_study, per_study * counts)  # one box per finding and view


def test_boxes_are_normalised_and_inside_the_lung_field(studies):
    images, arrays = studies
    boxes = arrays["region_box"]
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    checked = 0
    tol = 1.5 / images.shape[1]
    for study, finding, box, phrase in _frontal_regions(arrays):
        if FINDINGS[finding] == "cardiomegaly":
            lungs = arrays["lung_box"][arrays["view_offsets"][study]]
            thorax = lungs[1, 2] - lungs[0, 0]
            assert (box[2] - box[0]) / thorax > 0.5  # cardiothoracic ratio of an enlarged heart
            continue
        side = 0 if "right" in split_words(phrase) else 1  # patient's right: image left
        lung = arrays["lung_box"][arrays["view_offsets"][study], side]
        assert (box[:2] >= lung[:2] - tol).all() and (box[2:] <= lung[2:] + tol).all(), phrase
        if FINDINGS[finding] == "nodule":  # the nodule's centre lies in its zone's third
            zone = next(z for z, w in ZONE_WORDS.items() if w & set(split_words(phrase)))
            third = (lung[3] - lung[1]) / 3
            centre = (box[1] + box[3]) / 2 - lung[1]
            k = ("upper", "middle", "lower").index(zone)
            assert k * third - tol <= centre <= (k + 1) * third + tol, phrase
        checked += 1
    assert checked > 100


def test_pixels_carry_the_findings(studies):
    images, arrays = studies
    size = images.shape[1]
    normal = arrays["view_offsets"][:-1][arrays["labels"].sum(1) == 0]
    reference = images[normal].astype(np.float32).mean(0)  # mean normal frontal view
    diffs: dict[str, list[float]] = {name: [] for name in FINDINGS}
    for study, finding, box, _ in _frontal_regions(arrays):
        rows, cols = _pixels(box, size)
        image = images[arrays["view_offsets"][study]].astype(np.float32)
        diffs[FINDINGS[finding]].append(
            float(image[rows, cols].mean() - reference[rows, cols].mean())
        )
    for name, values in diffs.items():
        values = np.array(values)
        assert len(values) >= 10, name
        if name == "pneumothorax":  # air without lung markings: darker
            assert values.mean() < -5 and (values < 0).mean() > 0.8, (name, values.mean())
        else:  # nodule, opacity, fluid, a wider heart: brighter
            assert values.mean() > 8 and (values > 0).mean() > 0.8, (name, values.mean())


def test_reports_state_present_findings_and_negate_absent_ones(studies):
    _, arrays = studies
    phrases: dict[int, dict[str, str]] = {}
    for study, finding, _, phrase in _frontal_regions(arrays):
        phrases.setdefault(study, {})[FINDINGS[finding]] = phrase
    for i, (report, labels) in enumerate(zip(arrays["reports"], arrays["labels"], strict=True)):
        sections = parse_report(report.decode())
        assert {"findings", "impression"} <= set(sections)
        stated = {}
        for name, keywords in KEYWORDS.items():
            mentions = [s for s in _sentences(sections["findings"]) if keywords & set(s)]
            assert mentions, (name, report)
            positive = [s for s in mentions if not NEGATION & set(s)]
            stated[name] = bool(positive)
            if positive and name != "cardiomegaly":
                truth = split_words(phrases[i][name])
                side = "right" if "right" in truth else "left"
                assert side in positive[0] and ({"right", "left"} - {side}).isdisjoint(positive[0])
                if name in ("nodule", "opacity"):
                    zone = next(w for w in ZONE_WORDS.values() if w & set(truth))
                    assert zone & set(positive[0]), (positive[0], truth)
        assert [stated[name] for name in FINDINGS] == labels.astype(bool).tolist(), report
        impression = set(split_words(sections["impression"]))
        if labels.sum() == 0:
            assert {"no", "normal"} & impression
        else:
            present = [name for name, y in zip(FINDINGS, labels, strict=True) if y]
            assert all(KEYWORDS[name] & impression for name in present), report


# ------------------------------------------------------------------ report sections

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_parse_report_on_real_layouts():
    sections = parse_report(MIMIC_REPORT)
    assert list(sections) == [
        "preamble",
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]
    assert sections["preamble"] == "FINAL REPORT"
    assert sections["findings"].startswith("There is no focal consolidation, pleural effusion")
    assert sections["findings"].endswith("cardiomediastinal silhouette is normal.")
    assert sections["impression"] == "No acute cardiopulmonary process."
    mixed = (
        "History : cough\nFindings : Heart is normal.\nno change since comparison: x\n"
        "Impression: Clear."
    )
    assert parse_report(mixed) == {
        "history": "cough",
        "findings": "Heart is normal. no change since comparison: x",  # not at a line start
        "impression": "Clear.",
    }
    iu = "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear."
    assert parse_report(iu) == {"preamble": iu}
    assert parse_report("IMPRESSION: Small left effusion.\nIMPRESSION: Stable.") == {
        "impression": "Small left effusion. Stable."
    }


def test_select_sections_order_and_fallbacks():
    both = {"indication": "cough", "findings": "A.", "impression": "B."}
    assert select_sections(both, ["findings", "impression"]) == "findings : A. impression : B."
    assert select_sections(both, ["impression", "findings"]) == "impression : B. findings : A."
    assert select_sections({"impression": "B."}, ["findings", "impression"]) == "impression : B."
    assert select_sections({"findings": "A."}, ["impression"]) == "findings : A."  # fallback
    assert select_sections({"preamble": "Lungs clear."}, ["findings"]) == "Lungs clear."
    assert select_sections({"indication": "cough"}, ["findings"]) == ""


# ------------------------------------------------------------------ datamodule


@pytest.fixture
def dm(cache) -> MedicalReportDataModule:
    cfg = MedicalReportDataConfig(**TINY, batch_size=8, eval_batch_size=5)
    module = MedicalReportDataModule(cfg)
    module.prepare_data()
    setup_with_words(module)
    return module


def test_registered_and_config_validated():
    entry = DATAMODULES.get("medical_report")
    assert entry.cls is MedicalReportDataModule and entry.config is MedicalReportDataConfig
    for bad, match in (
        (dict(format="dicom"), "data.format"),
        (dict(train_views="all"), "data.train_views"),
        (dict(format="mimic_cxr"), "data.format 'mimic_cxr' needs data.root"),
        (dict(sections=["findngs"]), "data.sections"),
        (dict(sections=[]), "data.sections"),
    ):
        with pytest.raises(ValueError, match=match):
            MedicalReportDataConfig(**bad)


def test_batches_follow_the_contract(dm, cache):
    assert dm.tower_context() == {"image_size": 64, "in_channels": 1, "max_text_len": 64}
    b = next(iter(dm.train_dataloader()))
    labels = {f"label/{name}" for name in FINDINGS}
    assert (
        set(b)
        == {"image", "text_ids", "text_mask", "index", "item_id", "boxes", "skipped"}
        | {
            "box_finding",
            "view",
        }
        | labels
    )
    assert b["image"].dtype == torch.float32 and b["image"].shape == (8, 1, 64, 64)
    assert -1 <= b["image"].min() and b["image"].max() <= 1
    assert b["boxes"].dtype == torch.float32 and b["boxes"].shape == (8, chest.MAX_REGIONS, 4)
    assert b["box_finding"].dtype == torch.long and b["box_finding"].shape == (8, 2)
    for key in ("index", "item_id", "view", *labels):
        assert b[key].dtype == torch.long and b[key].shape == (8,)
        if key.startswith("label/"):
            assert set(b[key].tolist()) <= {0, 1}
    assert torch.equal(b["index"], b["item_id"])  # one report per study
    pad = b["box_finding"] < 0
    assert (b["boxes"][pad] == -1).all() and (
        (b["boxes"][~pad] >= 0) & (b["boxes"][~pad] <= 1)
    ).all()
    for k in range(8):  # box findings are the study's labelled findings
        shown = {FINDINGS[f] for f in b["box_finding"][k].tolist() if f >= 0}
        assert shown == {name for name in FINDINGS if b[f"label/{name}"][k] == 1}
    text = dm.datasets["train"].captions.text(int(b["index"][0]))
    assert text.startswith("findings : ") and " impression : " in text
    assert "indication" not in text and "examination" not in text


def test_evaluation_shows_the_frontal_view_in_order(dm, cache):
    raw = chest.load_split(chest.chest_dir(dm.source.generator, cache), "val")
    batches = list(dm.val_dataloader())
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.arange(12))
    assert all((b["view"] == 0).all() for b in batches)
    images = torch.cat([b["image"] for b in batches])
    first = torch.tensor(raw.images[raw.view_offsets[:-1]]).float() / 127.5 - 1
    assert torch.allclose(images[:, 0], first)
    regions = dm.regions("val")
    frontal = regions["view"] == 0
    boxes = torch.cat([b["boxes"] for b in batches])
    for item, box in zip(regions["item_id"][frontal], regions["box"][frontal], strict=True):
        assert any(torch.allclose(torch.tensor(box), row) for row in boxes[item])
    assert len(regions["phrase"]) == len(regions["box"])
    assert all(isinstance(p, str) and p for p in regions["phrase"])


def test_training_draws_both_views_over_epochs(dm):
    torch.manual_seed(0)
    offsets = dm.datasets["train"].load.views.offsets
    two_views = set(np.flatnonzero(np.diff(offsets) == 2).tolist())
    assert two_views
    seen: dict[int, set[int]] = {}
    for _ in range(10):
        for b in dm.train_dataloader():
            for item, view in zip(b["item_id"].tolist(), b["view"].tolist(), strict=True):
                seen.setdefault(item, set()).add(view)
    assert all(seen[i] == {0, 1} for i in two_views if i in seen)
    assert all(seen[i] == {0} for i in seen if i not in two_views)
    first = MedicalReportDataModule(replace(dm.cfg, train_views="first"), tokenizer=dm.tokenizer)
    setup_with_words(first, "fit")
    assert all((b["view"] == 0).all() for b in first.train_dataloader())


def test_zero_shot_prompts_use_report_words_and_dataset_pickles_small(dm):
    vocab = set(dm.tokenizer.vocab)
    assert set(dm.zero_shot_binary_tasks) == set(FINDINGS)
    for negative, positive in dm.zero_shot_binary_tasks.values():
        assert negative != positive
        assert all(w in vocab for w in split_words(negative + " " + positive))
    assert dm.zero_shot_tasks == {} and dm.choice_tasks == {}
    assert "train 40 studies" in dm.describe()
    dataset = dm.datasets["train"]
    assert len(pickle.dumps(dataset)) < 40 * 64 * 64 / 2  # images travel as their path
    clone = pickle.loads(pickle.dumps(dataset))
    torch.manual_seed(1)
    a = dataset[3]
    torch.manual_seed(1)
    assert torch.equal(a["image"], clone[3]["image"])


# ------------------------------------------------------------------ real formats


def _tokenizer() -> WordTokenizer:
    return WordTokenizer.build(["findings impression heart lungs clear"], max_len=16)


def _csv(path, header, rows):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _image(path, level, suffix="png"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (12, 10), level).save(path.with_suffix(f".{suffix}"))


STUDIES = [  # subject, study, [(dicom, view, grey level)], split
    (10000032, 50414267, [("dlat", "LATERAL", 200), ("dpa", "PA", 40)], "train"),
    (10000032, 53189527, [("dap", "AP", 80)], "train"),
    (11000011, 51000001, [("dv", "PA", 120)], "validate"),
    (12000012, 52000002, [("dt", "AP", 160)], "test"),
]


@pytest.fixture
def mimic(tmp_path):
    for subject, study, dicoms, _ in STUDIES:
        folder = tmp_path / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        for dicom, _, level in dicoms:
            _image(folder / dicom, level, "jpg")
        folder.with_suffix(".txt").write_text(
            MIMIC_REPORT.replace("No acute", f"Study {study}. No acute")
        )
    rows = [(d, s, st, v) for s, st, dicoms, _ in STUDIES for d, v, _ in dicoms]
    _csv(
        tmp_path / "mimic-cxr-2.0.0-metadata.csv",
        ["dicom_id", "subject_id", "study_id", "ViewPosition"],
        rows,
    )
    split_rows = [(d, st, s, sp) for s, st, dicoms, sp in STUDIES for d, _, _ in dicoms]
    _csv(
        tmp_path / "mimic-cxr-2.0.0-split.csv",
        ["dicom_id", "study_id", "subject_id", "split"],
        split_rows,
    )
    header = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Lung Lesion"]
    header += ["Lung Opacity", "Pleural Effusion", "Pneumothorax"]
    _csv(
        tmp_path / "mimic-cxr-2.0.0-chexpert.csv",
        header,
        [
            (10000032, 50414267, "1.0", "1.0", "", "-1.0", "0.0", ""),
            (11000011, 51000001, "", "", "1.0", "", "", "1.0"),
        ],
    )
    return tmp_path


def test_mimic_cxr_reader_and_loader(mimic):
    cfg = MedicalReportDataConfig(
        format="mimic_cxr", root=str(mimic), image_size=16, batch_size=1, eval_batch_size=4
    )
    dm = MedicalReportDataModule(cfg)
    setup_with_words(dm)
    train = dm.datasets["train"]
    assert train.captions.num_items == 2 and dm.datasets["val"].captions.num_items == 1
    assert train.load.views.kind.tolist() == [0, 1, 0]  # PA before LATERAL
    assert train.labels["cardiomegaly"].tolist() == [1, -1]  # second study not in chexpert
    assert train.labels["opacity"].tolist() == [-1, -1]  # uncertain (-1.0), not in chexpert
    assert train.labels["nodule"].tolist() == [0, -1]  # blank: 0
    assert "Study 50414267" in train.captions.text(0)
    assert train.captions.text(0).startswith("findings : There is no focal consolidation")
    (batch,) = list(dm.val_dataloader())
    assert batch["image"].shape == (1, 1, 16, 16) and batch["view"].tolist() == [0]
    assert torch.allclose(batch["image"], torch.tensor(120 / 127.5 - 1), atol=0.03)
    assert batch["label/nodule"].tolist() == [1] and batch["label/pneumothorax"].tolist() == [1]
    assert (batch["boxes"] == -1).all() and (batch["box_finding"] == -1).all()
    first = MedicalReportDataModule(replace(cfg, train_views="first"), tokenizer=dm.tokenizer)
    setup_with_words(first, "fit")
    pa = first.datasets["train"][0]  # the PA view, although the lateral is listed first
    assert pa["view"] == 0 and torch.allclose(pa["image"], torch.tensor(40 / 127.5 - 1), atol=0.03)
    assert dm.regions("train")["box"].shape == (0, 4)


def test_mimic_cxr_errors_name_the_file(mimic):
    from datamodules.formats import read_mimic_cxr

    chexpert = mimic / "mimic-cxr-2.0.0-chexpert.csv"
    text = chexpert.read_text()
    chexpert.write_text(text.replace("-1.0", "2.0"))
    with pytest.raises(DataError, match=r"mimic-cxr-2\.0\.0-chexpert\.csv:2: 'Lung Opacity'"):
        read_mimic_cxr(mimic, "train")
    chexpert.unlink()  # optional: all labels unknown
    assert (read_mimic_cxr(mimic, "train").labels["cardiomegaly"] == -1).all()
    meta = mimic / "mimic-cxr-2.0.0-metadata.csv"
    rows = meta.read_text().splitlines()
    meta.write_text("\n".join(rows[:3] + ["dx,abc,1,PA"] + rows[3:]))
    with pytest.raises(DataError, match=r"metadata\.csv:4: subject_id must be an integer"):
        read_mimic_cxr(mimic, "train")
    meta.write_text("\n".join(rows))
    missing = mimic / "files/p10/p10000032/s53189527/dap.jpg"
    missing.unlink()
    with pytest.raises(DataFileMissing, match=r"dap\.jpg \(listed at .*metadata\.csv:4\)"):
        read_mimic_cxr(mimic, "train")
    missing.write_bytes(b"")
    report = mimic / "files/p10/p10000032/s50414267.txt"
    report.unlink()
    with pytest.raises(DataFileMissing, match=r"s50414267\.txt \(study listed at .*metadata"):
        read_mimic_cxr(mimic, "train")
    report.write_text(MIMIC_REPORT)
    (mimic / "mimic-cxr-2.0.0-split.csv").unlink()  # optional: split by subject_id % 50
    assert len(read_mimic_cxr(mimic, "train").keys) == 4  # no subject id ends in 00, 01, 50, 51
    with pytest.raises(DataError, match=r"metadata\.csv: no study in split 'val'"):
        read_mimic_cxr(mimic, "val")


def test_mimic_cxr_csv_files_may_start_with_a_utf8_bom(mimic):
    """Spreadsheet exports start CSV files with a byte order mark; the first column still reads."""
    from datamodules.formats import read_mimic_cxr

    for name in ("metadata", "split", "chexpert"):
        path = mimic / f"mimic-cxr-2.0.0-{name}.csv"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    studies = read_mimic_cxr(mimic, "train")
    assert [k.decode() for k in studies.keys] == ["p10000032/s50414267", "p10000032/s53189527"]
    assert studies.labels["cardiomegaly"].tolist() == [1, -1]


def _iu(tmp_path, entries):
    (tmp_path / "annotation.json").write_text(json.dumps(entries))


def test_iu_xray_reader_and_errors(tmp_path):
    for name, level in (("CXR1/0", 30), ("CXR1/1", 90), ("CXR2/0", 150), ("CXR3/0", 210)):
        _image(tmp_path / "images" / name, level)
    report = "The heart is normal in size. The lungs are clear."
    entry = lambda key, paths: {"id": key, "report": report, "image_path": paths, "split": "x"}  # noqa: E731
    _iu(
        tmp_path,
        {
            "train": [entry("CXR1", ["CXR1/0.png", "CXR1/1.png"]), entry("CXR3", ["CXR3/0.png"])],
            "val": [entry("CXR2", ["CXR2/0.png"])],
            "test": [entry("CXR3", ["CXR3/0.png"])],
        },
    )
    cfg = MedicalReportDataConfig(format="iu_xray", root=str(tmp_path), image_size=8, batch_size=2)
    dm = MedicalReportDataModule(cfg)
    setup_with_words(dm)
    assert dm.zero_shot_binary_tasks == {}
    assert dm.datasets["train"].captions.text(0) == report  # headerless: the text itself
    (batch,) = list(dm.val_dataloader())
    assert batch["label/effusion"].tolist() == [-1] and batch["view"].tolist() == [0]
    assert torch.allclose(batch["image"], torch.tensor(150 / 127.5 - 1), atol=0.02)
    assert dm.datasets["train"].load.views.kind.tolist() == [0, 1, 0]
    from datamodules.formats import read_iu_xray

    bad = {"train": [entry("CXR1", ["CXR1/0.png"]), {"id": "CXR9", "report": report}]}
    _iu(tmp_path, bad)
    with pytest.raises(DataError, match=r"annotation\.json: train\[1\]: 'image_path'"):
        read_iu_xray(tmp_path / "annotation.json", tmp_path / "images", "train")
    _iu(tmp_path, {"train": [entry("CXR1", ["CXR1/0.png", "CXR1/7.png"])]})
    with pytest.raises(
        DataFileMissing, match=r"CXR1/7\.png \(listed at .*annotation\.json: train\[0\]\)"
    ):
        read_iu_xray(tmp_path / "annotation.json", tmp_path / "images", "train")
    (tmp_path / "images" / "CXR1" / "0.png").write_bytes(b"not a png")
    _iu(
        tmp_path, {"train": [entry("CXR1", ["CXR1/0.png"])], "val": [entry("CXR2", ["CXR2/0.png"])]}
    )
    broken = MedicalReportDataModule(cfg, tokenizer=_tokenizer())
    setup_with_words(broken, "fit")
    with pytest.raises(MediaError, match=r"CXR1/0\.png"):
        broken.datasets["train"][0]

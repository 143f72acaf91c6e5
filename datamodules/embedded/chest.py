"""Built-in medical-report data: synthetic chest radiographs with radiology-style reports.

A study is one frontal (PA) view and, for about a third of the studies, a lateral view rendered
with its own anatomy (one lung field, spine behind, heart in front). Images are grayscale: dark
lung fields, a bright mediastinum and heart shadow, faint curved ribs, domed hemidiaphragms,
vascular texture and noise, with per-study size, position and contrast jitter. As in a real
PA film the patient's right is on the image's left.

Most studies are normal; an abnormal one has one or two of the :data:`FINDINGS` (with unequal
prevalences), each rendered at an anatomical place (side, zone) and recorded with its box per
view (normalised ``x0, y0, x1, y1``) and a region phrase ("a 2 cm nodule in the right upper
lobe"). The report has FINDINGS and IMPRESSION sections (sometimes EXAMINATION, INDICATION and
COMPARISON too) written from templates and synonyms: every present finding with its location,
negations of the absent ones, and an impression that summarises.

Everything is deterministic from :class:`ChestConfig`; :func:`ensure_chest` writes the splits
once into ``<cache_root>/data/chest-<hash>`` (atomic rename) and later calls reuse it.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.storage import pack_strings

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
FINDINGS = ("nodule", "opacity", "effusion", "cardiomegaly", "pneumothorax")
#: Relative prevalence of each finding among abnormal studies.
PREVALENCE = (0.24, 0.32, 0.2, 0.14, 0.1)
MAX_REGIONS = 2  # findings per study, so boxes per view
SIDES = ("right", "left")  # patient's side; the right lung is on the image's left
ZONES = ("upper", "middle", "lower")
FRONTAL, LATERAL = 0, 1

_ZONE_WORDS = {
    "upper": ("upper lobe", "upper zone", "upper lung"),
    "middle": ("mid zone", "mid lung", "middle zone"),
    "lower": ("lower lobe", "lower zone", "lower lung"),
}


@dataclass(frozen=True)
class ChestConfig:
    """Generator parameters; their hash names the cache directory."""

    num_train: int = 6000
    num_val: int = 1000
    num_test: int = 1000
    image_size: int = 64
    normal_fraction: float = 0.6
    lateral_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        if not (0 <= self.normal_fraction <= 1 and 0 <= self.lateral_fraction <= 1):
            raise ValueError("normal_fraction and lateral_fraction must be in [0, 1]")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        """Short hash of the parameters and the generator version."""
        return config_key(self, GENERATOR_VERSION)


@dataclass(frozen=True)
class Finding:
    """One abnormality: kind, patient side and lung zone ("" where not anatomical) and size
    (centimetres for a nodule, "small" / "moderate" / "" otherwise)."""

    kind: str
    side: str = ""
    zone: str = ""
    size: str = ""


@dataclass(frozen=True)
class ChestSplit:
    """One split as read from the cache. Study ``i`` has the views
    ``view_offsets[i]:view_offsets[i + 1]`` of ``images`` (frontal first); region ``r`` is
    finding ``region_finding[r]`` in view ``region_image[r]`` at ``region_box[r]``."""

    images: np.ndarray  # uint8 [V, S, S], memory-mapped
    view_offsets: np.ndarray  # int64 [N + 1]
    view_kind: np.ndarray  # int8 [V]: 0 frontal, 1 lateral
    lung_box: np.ndarray  # float32 [V, 2, 4]: right and left lung fields (lateral: both the field)
    reports: np.ndarray  # bytes [N]
    labels: np.ndarray  # int8 [N, len(FINDINGS)]
    region_image: np.ndarray  # int64 [R]
    region_finding: np.ndarray  # int8 [R]
    region_box: np.ndarray  # float32 [R, 4]
    region_phrase: np.ndarray  # bytes [R]

    @property
    def num_studies(self) -> int:
        return len(self.view_offsets) - 1

    def report(self, i: int) -> str:
        return self.reports[i].decode("utf-8")


# ---------------------------------------------------------------- sampling


def sample_findings(py: random.Random, normal_fraction: float) -> list[Finding]:
    """No finding with probability ``normal_fraction``, else one (70%) or two distinct ones."""
    if py.random() < normal_fraction:
        return []
    count = 1 if py.random() < 0.7 else 2
    kinds: list[str] = []
    while len(kinds) < count:
        kind = py.choices(FINDINGS, weights=PREVALENCE)[0]
        if kind not in kinds:
            kinds.append(kind)
    return [_finding(py, kind) for kind in kinds]


def _finding(py: random.Random, kind: str) -> Finding:
    side = py.choice(SIDES)
    if kind == "nodule":
        return Finding(kind, side, py.choice(ZONES), str(py.randint(1, 3)))
    if kind == "opacity":
        return Finding(kind, side, py.choices(ZONES, weights=(0.25, 0.3, 0.45))[0])
    if kind == "effusion":
        return Finding(kind, side, "lower", py.choice(("small", "small", "moderate")))
    if kind == "pneumothorax":
        return Finding(kind, side, "upper", py.choice(("small", "small", "moderate")))
    return Finding(kind)


# ---------------------------------------------------------------- rendering


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, edge: float
) -> np.ndarray:
    """Soft ellipse mask in [0, 1]: 1 inside, a ramp of width ``edge`` (in radius units)."""
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return np.clip((1 - r) / edge + 0.5, 0.0, 1.0)


def _bbox(mask: np.ndarray) -> np.ndarray:
    """Normalised ``x0, y0, x1, y1`` of the pixels where ``mask`` > 0.5."""
    ys, xs = np.nonzero(mask > 0.5)
    size = mask.shape[0]
    if len(xs) == 0:
        raise RuntimeError("empty region mask")
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) / size


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 8) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a ``cells`` x ``cells`` grid bilinearly upsampled."""
    t = np.linspace(0, cells - 1, size)
    lo = np.floor(t).astype(int).clip(0, cells - 2)
    w = t - lo
    up = np.zeros((size, cells))
    up[np.arange(size), lo], up[np.arange(size), lo + 1] = 1 - w, w
    return up @ rng.normal(0, 1, (cells, cells)) @ up.T


class _Canvas:
    """One view under construction: pixel grid, intensity and the study's jitter."""

    def __init__(self, size: int, rng: np.random.Generator, anatomy: dict) -> None:
        self.size, self.rng, self.a = size, rng, anatomy
        coords = (np.arange(size) + 0.5) / size
        self.x, self.y = np.meshgrid(coords, coords)
        self.img = np.full((size, size), 12.0)

    def finish(self) -> np.ndarray:
        a, img = self.a, self.img
        img = (img - 100) * a["contrast"] + 100 + a["brightness"]
        img = img + self.rng.normal(0, a["noise"], img.shape)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def ribs(self, cx: float, body: np.ndarray, curve: float) -> None:
        bent = self.y + curve * (self.x - cx) ** 2
        stripes = np.clip(np.sin(2 * np.pi * (bent * 7.5 + self.a["rib_phase"])) - 0.55, 0, None)
        self.img += 30 * stripes * body


def _render_frontal(canvas: _Canvas, findings: list[Finding]) -> tuple[list, np.ndarray]:
    a, x, y = canvas.a, canvas.x, canvas.y
    s, cx, cy = a["scale"], a["cx"], a["cy"]
    body = _ellipse(x, y, cx, cy + 0.1, 0.47 * s, 0.6 * s, 0.05)
    canvas.img += 95 * body
    lungs, domes = [], []
    for k, sign in enumerate((-1, 1)):  # right lung on the image's left
        lx, ax, ay = cx + sign * 0.19 * s, (0.15 if k == 0 else 0.14) * s, 0.32 * s
        dome = (
            cy + (0.25 if k == 0 else 0.27) * s - 0.06 * s * np.clip(1 - ((x - lx) / ax) ** 2, 0, 1)
        )
        lung = _ellipse(x, y, lx, cy, ax, ay, 0.08) * np.clip((dome - y) * canvas.size, 0, 1)
        lungs.append(lung)
        domes.append(dome)
    canvas.img += 25 * body * (y > np.minimum(*domes))  # abdomen below the diaphragm
    field = np.maximum(*lungs)
    texture = 6 * _smooth_noise(canvas.rng, canvas.size)
    canvas.img = canvas.img * (1 - field) + (38 + texture) * field
    boxes: dict[str, np.ndarray] = {}
    for f in findings:
        if f.kind != "cardiomegaly":
            boxes[f.kind] = _lung_finding(canvas, f, lungs[SIDES.index(f.side)], texture)
    enlarged = any(f.kind == "cardiomegaly" for f in findings)
    heart_w = (0.21 if enlarged else 0.15) * s * a["heart_jitter"]
    heart = _ellipse(x, y, cx + 0.04 * s, cy + 0.14 * s, heart_w, 0.12 * s, 0.1)
    mediastinum = _ellipse(x, y, cx, cy - 0.05 * s, 0.07 * s, 0.27 * s, 0.2)
    dense = np.maximum(heart, mediastinum)
    canvas.img = canvas.img * (1 - dense) + 165 * dense
    if enlarged:
        boxes["cardiomegaly"] = _bbox(heart)
    canvas.ribs(cx, body, 1.2)
    lung_box = np.stack([_bbox(lung) for lung in lungs])
    return [boxes[f.kind] for f in findings], lung_box


def _zone_range(lung: np.ndarray, zone: str) -> tuple[float, float]:
    y0, y1 = _bbox(lung)[[1, 3]]
    third = (y1 - y0) / 3
    k = ZONES.index(zone)
    return y0 + k * third, y0 + (k + 1) * third


def _spot(canvas: _Canvas, lung: np.ndarray, zone: str, margin: float) -> tuple[float, float]:
    """A point well inside the lung (``margin`` from its edge) in the zone's height band."""
    y0, y1 = _zone_range(lung, zone)
    inside = (lung > 0.99) & (canvas.y >= y0) & (canvas.y <= y1)
    pad = max(1, round(margin * canvas.size))
    core = inside.copy()
    core[pad:-pad, pad:-pad] &= (
        inside[: -2 * pad, pad:-pad]
        & inside[2 * pad :, pad:-pad]
        & inside[pad:-pad, : -2 * pad]
        & inside[pad:-pad, 2 * pad :]
    )
    ys, xs = np.nonzero(core if core.any() else inside)
    k = canvas.rng.integers(len(xs))
    return float(canvas.x[0, xs[k]]), float(canvas.y[ys[k], 0])


def _lung_finding(canvas: _Canvas, f: Finding, lung: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Draw a finding inside one lung; its box."""
    x, y, s = canvas.x, canvas.y, canvas.a["scale"]
    if f.kind == "nodule":
        r = (0.018 + 0.01 * int(f.size)) * s
        px, py = _spot(canvas, lung, f.zone, r)
        mask = _ellipse(x, y, px, py, r, r, 0.3) * lung
        canvas.img += 75 * mask
        return _bbox(mask)
    if f.kind == "opacity":
        sigma = canvas.rng.uniform(0.045, 0.065) * s
        px, py = _spot(canvas, lung, f.zone, sigma)
        blob = np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma**2)) * lung
        canvas.img += 70 * blob
        return _bbox(blob * 2.2)  # about 1.3 sigma
    lx0, y0, lx1, y1 = _bbox(lung)
    lateral = np.abs(x - (lx0 + lx1) / 2) / ((lx1 - lx0) / 2)  # 0 centre, 1 edge of the lung
    grow = 1.0 if f.size == "small" else 1.8
    if f.kind == "effusion":
        level = y1 - 0.09 * grow * s - 0.05 * s * lateral  # meniscus rises laterally
        mask = lung * np.clip((y - level) * canvas.size, 0, 1)
        canvas.img += (125 - canvas.img) * mask
        return _bbox(mask)
    # pneumothorax: the apex and lateral rim beyond a collapsed lung edge, dark and featureless
    towards = np.sign(((lx0 + lx1) / 2) - canvas.a["cx"])  # lateral direction on the image
    ax, ay = (lx1 - lx0) / 2, (y1 - y0) / 2
    shift = 0.09 * grow * s
    collapsed = _ellipse(
        x, y, (lx0 + lx1) / 2 - towards * shift * 0.5, (y0 + y1) / 2 + shift, ax, ay, 0.04
    )
    apex = np.clip((y0 + 0.6 * (y1 - y0) - y) * canvas.size / 3, 0, 1)  # upper part only
    mask = lung * (1 - collapsed) * apex
    canvas.img -= (texture + 22) * mask
    edge = np.clip(1 - np.abs(collapsed - 0.5) * 4, 0, None) * lung
    canvas.img += 25 * edge
    return _bbox(mask)


def _render_lateral(canvas: _Canvas, findings: list[Finding]) -> tuple[list, np.ndarray]:
    """Side view: one lung field, spine at the back (image right), heart in front and low."""
    a, x, y = canvas.a, canvas.x, canvas.y
    s, cy = a["scale"], a["cy"]
    body = _ellipse(x, y, 0.5, cy + 0.1, 0.45 * s, 0.6 * s, 0.05)
    canvas.img += 100 * body
    dome = cy + 0.26 * s - 0.05 * s * np.clip(1 - ((x - 0.5) / (0.3 * s)) ** 2, 0, 1)
    lung = _ellipse(x, y, 0.5, cy, 0.3 * s, 0.33 * s, 0.08) * np.clip(
        (dome - y) * canvas.size, 0, 1
    )
    canvas.img += 25 * body * (y > dome)
    texture = 5 * _smooth_noise(canvas.rng, canvas.size)
    canvas.img = canvas.img * (1 - lung) + (60 + texture) * lung  # two lungs overlap: greyer
    boxes: dict[str, np.ndarray] = {}
    for f in findings:
        if f.kind != "cardiomegaly":
            boxes[f.kind] = _lung_finding(canvas, f, lung, texture)  # both lungs: one field
    enlarged = any(f.kind == "cardiomegaly" for f in findings)
    heart_w = (0.22 if enlarged else 0.15) * s * a["heart_jitter"]
    heart = _ellipse(x, y, 0.38, cy + 0.16 * s, heart_w, 0.14 * s, 0.15)
    canvas.img += (140 - canvas.img) * heart * 0.8
    if enlarged:
        boxes["cardiomegaly"] = _bbox(heart)
    spine = np.clip(1 - np.abs(x - 0.5 - 0.33 * s) / (0.05 * s), 0, 1) * body
    vertebrae = 0.75 + 0.25 * np.sign(np.sin(2 * np.pi * y * 11))
    canvas.img += 90 * spine * vertebrae
    canvas.img += 50 * np.clip(1 - np.abs(x - 0.5 + 0.38 * s) / (0.015 * s), 0, 1) * body  # sternum
    lung_box = np.stack([_bbox(lung)] * 2)
    return [boxes[f.kind] for f in findings], lung_box


def render_study(
    findings: list[Finding], lateral: bool, size: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[np.ndarray]]:
    """Images (frontal first), per view the box of each finding, per view the lung boxes."""
    anatomy = {
        "scale": rng.uniform(0.93, 1.05),
        "cx": 0.5 + rng.uniform(-0.03, 0.03),
        "cy": 0.44 + rng.uniform(-0.03, 0.03),
        "contrast": rng.uniform(0.85, 1.15),
        "brightness": rng.uniform(-10, 10),
        "noise": rng.uniform(2.5, 5.0),
        "rib_phase": rng.uniform(0, 1),
        "heart_jitter": rng.uniform(0.92, 1.08),
    }
    images, boxes, lungs = [], [], []
    for render in (_render_frontal, _render_lateral) if lateral else (_render_frontal,):
        canvas = _Canvas(size, rng, anatomy)
        view_boxes, lung_box = render(canvas, findings)
        images.append(canvas.finish())
        boxes.append(view_boxes)
        lungs.append(lung_box)
    return images, boxes, lungs


# ---------------------------------------------------------------- reports


def location(f: Finding, variant: int) -> str:
    """ "right upper lobe", "left mid zone", ... ("" for a finding without a zone)."""
    return f"{f.side} {_ZONE_WORDS[f.zone][variant]}" if f.zone else ""


def region_phrase(f: Finding, py: random.Random) -> str:
    """A noun phrase naming the finding and where it is, for grounding."""
    loc = location(f, py.randrange(3))
    return {
        "nodule": f"a {f.size} cm nodule in the {loc}",
        "opacity": f"{py.choice(('patchy', 'focal', 'airspace'))} opacity in the {loc}",
        "effusion": f"a {f.size} {f.side} pleural effusion",
        "cardiomegaly": "an enlarged cardiac silhouette",
        "pneumothorax": f"a {f.size} {f.side} apical pneumothorax",
    }[f.kind]


def _positive(f: Finding, py: random.Random) -> str:
    loc = location(f, py.randrange(3))
    options = {
        "nodule": (
            f"There is a {f.size} cm nodule in the {loc}.",
            f"A {f.size} cm rounded nodule projects over the {loc}.",
            f"{f.size} cm pulmonary nodule in the {loc}.",
        ),
        "opacity": (
            f"Patchy airspace opacity in the {loc}.",
            f"There is focal consolidation in the {loc}.",
            f"Ill-defined opacity is present in the {loc}.",
        ),
        "effusion": (
            f"{f.size.capitalize()} {f.side} pleural effusion.",
            f"There is a {f.size} {f.side} pleural effusion.",
            f"Blunting of the {f.side} costophrenic angle consistent with a {f.size} effusion.",
        ),
        "cardiomegaly": (
            "The heart is enlarged.",
            "The cardiac silhouette is enlarged.",
            "Cardiomegaly is present.",
        ),
        "pneumothorax": (
            f"{f.size.capitalize()} {f.side} apical pneumothorax.",
            f"There is a {f.size} {f.side} apical pneumothorax.",
            f"A {f.size} {f.side} apical pneumothorax is seen.",
        ),
    }[f.kind]
    return py.choice(options)


_NEGATIONS = {
    "nodule": ("No suspicious pulmonary nodule.", "No focal nodule is seen."),
    "opacity": ("No focal opacity.", "No focal consolidation.", "No airspace opacity."),
    "effusion": ("No pleural effusion.", "There is no pleural effusion."),
    "cardiomegaly": (
        "Heart size is normal.",
        "The cardiac silhouette is within normal limits.",
        "Normal heart size.",
    ),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
}
_PAIRED_NEGATIONS = {
    ("nodule", "opacity"): (
        "The lungs are clear without focal opacity or nodule.",
        "No focal consolidation or suspicious nodule.",
    ),
    ("effusion", "pneumothorax"): (
        "No pleural effusion or pneumothorax.",
        "There is no pleural effusion or pneumothorax.",
    ),
}


def _negations(absent: set[str], py: random.Random) -> list[str]:
    out = []
    for pair, options in _PAIRED_NEGATIONS.items():
        if set(pair) <= absent and py.random() < 0.7:
            out.append(py.choice(options))
            absent = absent - set(pair)
    return out + [py.choice(_NEGATIONS[kind]) for kind in FINDINGS if kind in absent]


def _impression(findings: list[Finding], py: random.Random) -> str:
    if not findings:
        return py.choice(
            (
                "No acute cardiopulmonary process.",
                "No acute cardiopulmonary abnormality.",
                "No acute intrathoracic process.",
                "Normal chest radiograph.",
            )
        )
    parts = []
    for f in findings:
        loc = location(f, py.randrange(3))
        parts.append(
            {
                "nodule": py.choice(
                    (f"{f.size} cm {loc} nodule.", f"{loc.capitalize()} nodule, CT recommended.")
                ),
                "opacity": py.choice(
                    (f"{loc.capitalize()} opacity, possibly pneumonia.", f"{loc} consolidation.")
                ),
                "effusion": f"{f.size} {f.side} pleural effusion.",
                "cardiomegaly": py.choice(("Cardiomegaly.", "Enlarged cardiac silhouette.")),
                "pneumothorax": f"{f.size} {f.side} apical pneumothorax.",
            }[f.kind]
        )
    return " ".join(p[0].upper() + p[1:] for p in parts)


def _header(name: str, py: random.Random) -> str:
    return py.choice((f"{name.upper()}:", f"{name.capitalize()}:", f"{name.upper()} :"))


def write_report(findings: list[Finding], lateral: bool, py: random.Random) -> str:
    """A radiology report: optional EXAMINATION / INDICATION / COMPARISON, then FINDINGS and
    IMPRESSION, with the present findings in random order followed by the negations."""
    lines = []
    if py.random() < 0.5:
        views = "PA and lateral" if lateral else "PA"
        lines.append(f"{_header('examination', py)} Chest radiograph, {views} view{'s' * lateral}.")
    if py.random() < 0.5:
        reason = py.choice(
            ("Cough.", "Fever.", "Shortness of breath.", "Chest pain.", "Follow-up.")
        )
        lines.append(f"{_header('indication', py)} {reason}")
    if py.random() < 0.3:
        lines.append(f"{_header('comparison', py)} None.")
    present = [_positive(f, py) for f in py.sample(findings, len(findings))]
    absent = set(FINDINGS) - {f.kind for f in findings}
    sentences = present + _negations(absent, py)
    if py.random() < 0.3:
        sentences.append(
            py.choice(("The osseous structures are unremarkable.", "Bones are intact."))
        )
    body = " ".join(sentences)
    lines.append(f"{_header('findings', py)}{py.choice((' ', chr(10)))}{body}")
    lines.append(f"{_header('impression', py)} {_impression(findings, py)}")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- splits and cache


def generate_split(cfg: ChestConfig, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images ``uint8 [V, S, S]`` and the split's compact arrays (see :class:`ChestSplit`)."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 7])
    py = random.Random(int(rng.integers(2**62)))
    images, offsets, kinds, lung_boxes, reports = [], [0], [], [], []
    labels = np.zeros((cfg.num(split), len(FINDINGS)), np.int8)
    regions: dict[str, list] = {"image": [], "finding": [], "box": [], "phrase": []}
    for i in range(cfg.num(split)):
        findings = sample_findings(py, cfg.normal_fraction)
        lateral = py.random() < cfg.lateral_fraction
        views, boxes, lungs = render_study(findings, lateral, cfg.image_size, rng)
        phrases = [region_phrase(f, py) for f in findings]
        for v, view_boxes in enumerate(boxes):
            for f, box, phrase in zip(findings, view_boxes, phrases, strict=True):
                regions["image"].append(len(images) + v)
                regions["finding"].append(FINDINGS.index(f.kind))
                regions["box"].append(box)
                regions["phrase"].append(phrase)
        images += views
        lung_boxes += lungs
        kinds += [FRONTAL, LATERAL][: len(views)]
        offsets.append(len(images))
        reports.append(write_report(findings, lateral, py))
        labels[i, [FINDINGS.index(f.kind) for f in findings]] = 1
    arrays = {
        "view_offsets": np.asarray(offsets, np.int64),
        "view_kind": np.asarray(kinds, np.int8),
        "lung_box": np.asarray(lung_boxes, np.float32),
        "reports": pack_strings(reports),
        "labels": labels,
        "region_image": np.asarray(regions["image"], np.int64),
        "region_finding": np.asarray(regions["finding"], np.int8),
        "region_box": np.asarray(regions["box"], np.float32).reshape(-1, 4),
        "region_phrase": pack_strings(regions["phrase"]),
    }
    return np.stack(images), arrays


def chest_dir(cfg: ChestConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"chest-{cfg.key()}"


def ensure_chest(cfg: ChestConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically: see
    :func:`datamodules.embedded.cache.write_once`)."""
    return write_once(chest_dir(cfg, cache_root), partial(_write_chest, cfg))


def _write_chest(cfg: ChestConfig, directory: Path) -> None:
    """Every split and a ``meta.json`` into ``directory``."""
    for split in SPLITS:
        images, arrays = generate_split(cfg, split)
        np.save(directory / f"{split}_images.npy", images)
        np.savez(directory / f"{split}.npz", **arrays)
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "findings": FINDINGS}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_split(directory: Path, split: str) -> ChestSplit:
    """Read one split from a directory written by :func:`ensure_chest`."""
    with np.load(Path(directory) / f"{split}.npz") as arrays:
        fields = {name: arrays[name] for name in arrays.files}
    images = np.load(Path(directory) / f"{split}_images.npy", mmap_mode="r")
    return ChestSplit(images=images, **fields)

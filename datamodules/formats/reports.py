"""Radiology report sections: parsing real report layouts and building the model's text.

Reports (MIMIC-CXR free text, IU-Xray, the built-in chest data) are sections under headers
such as ``FINDINGS:``, ``Impression :`` or ``INDICATION:``. :func:`parse_report` splits a report
into ``{section: text}``; :func:`select_sections` joins the configured sections into the text
the text tower reads. :class:`ReportStudies` is what the MIMIC-CXR and IU-Xray readers return.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Header words recognised at a line start (case-insensitive), with their section names.
SECTION_ALIASES = {
    "findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "history": "history",
    "clinical history": "history",
    "examination": "examination",
    "exam": "examination",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "notification": "notification",
}
#: Main sections, in the order tried when none of the configured ones is present.
FALLBACK = ("findings", "impression")
PREAMBLE = "preamble"

_HEADER = re.compile(
    r"^[ \t]*(?P<name>"
    + "|".join(sorted((re.escape(k) for k in SECTION_ALIASES), key=len, reverse=True))
    + r")[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ReportStudies:
    """Studies of one split read from disk: study ``i`` (``keys[i]`` in the source) has the
    images ``paths[offsets[i]:offsets[i + 1]]`` (frontal views first; ``views`` 0 frontal,
    1 other), the report ``report(i)`` and ``labels[finding][i]`` in {1, 0, -1 unknown}.

    Reports are ragged (:func:`pack_ragged`): they run to kilobytes, and a fixed-width array
    would pad every report to the longest."""

    paths: np.ndarray  # bytes [V]
    views: np.ndarray  # int8 [V]
    offsets: np.ndarray  # int64 [N + 1]
    keys: np.ndarray  # bytes [N]
    reports: tuple[np.ndarray, np.ndarray]  # (uint8 [total bytes], int64 [N + 1])
    labels: dict[str, np.ndarray]  # finding -> int64 [N]

    @property
    def num_studies(self) -> int:
        return len(self.offsets) - 1

    def path(self, v: int) -> str:
        return self.paths[v].decode("utf-8")

    def report(self, i: int) -> str:
        data, bounds = self.reports
        return data[bounds[i] : bounds[i + 1]].tobytes().decode("utf-8")


def pack_ragged(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 strings as one byte buffer and their ``[N + 1]`` boundaries."""
    encoded = [s.encode("utf-8") for s in strings]
    bounds = np.concatenate([[0], np.cumsum([len(b) for b in encoded])]).astype(np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), bounds


def parse_report(text: str) -> dict[str, str]:
    """``{section: text}`` in the report's order, whitespace collapsed.

    A header is a known section word (:data:`SECTION_ALIASES`, any case) at a line start
    followed by a colon (spaces allowed before it); its text runs to the next header. Text
    before the first header is kept as ``"preamble"`` (a headerless report is all preamble).
    A section that appears twice keeps both texts, joined. Empty sections are dropped.
    """
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    starts = [(PREAMBLE, 0)] + [(SECTION_ALIASES[m["name"].lower()], m.end()) for m in matches]
    ends = [m.start() for m in matches] + [len(text)]
    for (name, start), end in zip(starts, ends, strict=True):
        body = _SPACE.sub(" ", text[start:end]).strip()
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    return sections


def select_sections(sections: dict[str, str], names: Sequence[str]) -> str:
    """The model's text: ``"<name> : <text>"`` for each configured section present, in the
    configured order (``"findings : ... impression : ..."``).

    Fallback when none of them is present: the first present of :data:`FALLBACK` (findings,
    then impression) under its own name, so a report without the configured sections still
    contributes its main text; failing that the headerless preamble, without a name (R2Gen's
    IU-Xray reports are stripped of headers). Returns "" when there is nothing of these.
    """
    chosen = [(name, sections[name]) for name in names if sections.get(name)]
    if not chosen:
        chosen = [(name, sections[name]) for name in FALLBACK if sections.get(name)][:1]
    if not chosen:
        return sections.get(PREAMBLE, "")
    return " ".join(f"{name} : {body}" for name, body in chosen)

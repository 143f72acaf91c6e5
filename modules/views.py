"""Random views of a batch made inside a method, on the batch's device (CLIP🚀's "local" views).

Every random draw comes from torch's global generator of the tensors' device, a fixed number of
draws per call whatever the data, so gradient caching (modules/grad_cache.py) replays a
micro-batch's views exactly and a fixed seed gives the same views.

Image views: random resized crop (resampled to the input size) plus faint pixel noise. No flips
and no colour changes: the built-in captions name left/right and colours, which must stay true.

Text views, on token ids (EDA, Wei & Zou 2019, as in clip-rocket's ``tokenizer.py``): with
probability ``stop_word_prob`` the caption's stop words are removed, then one of identity,
random swap of two words, random deletion of each word with probability ``deletion_prob`` is
applied, chosen with ``op_weights`` (synonym replacement needs a thesaurus: left out). Position 0
(``<cls>``) is never touched, a caption never loses all its words, and padding (id 0) stays
exactly where ``text_mask`` is False, at the end of the row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

#: Function words dropped by stop-word removal. Unlike NLTK's list, words that carry the
#: captions' meaning (above, below, over, under, left, right, numbers) are kept.
STOP_WORDS = frozenset(
    "a an the of is are be there here it its this that and or while where with at in on to by"
    " for from".split()
)


@dataclass
class ImageViewConfig:
    """Random resized crop: area fraction in ``crop_scale``, aspect ratio in ``crop_ratio``."""

    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale: need 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio: need 0 < low <= high, got {self.crop_ratio}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std: must be >= 0, got {self.noise_std}")


@dataclass
class TextViewConfig:
    """EDA on ids, as clip-rocket's training script (main.py) sets it: stop words removed with
    probability 0.8 (``--remove-stopwords-prob``; its tokenizer class's own default is 0.5),
    then one op drawn with odds (identity, swap, deletion) = (0, 0.4, 0.2) ~ (0, 0.2, 0.1)
    (``--no-text-augment-prob``, ``--random-swap-prob``, ``--random-deletion-prob``; its
    synonym replacement, odds 0.4, is left out); a deletion drops each word with
    ``deletion_prob`` (EDA's default p = 0.1)."""

    stop_word_prob: float = 0.8
    op_weights: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.1])
    deletion_prob: float = 0.1

    def __post_init__(self) -> None:
        if len(self.op_weights) != 3 or min(self.op_weights) < 0 or sum(self.op_weights) <= 0:
            raise ValueError(f"op_weights: three non-negative odds, not all 0: {self.op_weights}")
        for name in ("stop_word_prob", "deletion_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")


# ---------------------------------------------------------------- images


def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return low + (high - low) * torch.rand(n, device=like.device, dtype=like.dtype)


def random_resized_crop(images: Tensor, scale: Sequence[float], ratio: Sequence[float]) -> Tensor:
    """A random crop per image (area fraction in ``scale``, log-uniform aspect ratio in
    ``ratio``) resampled bilinearly to the input size; ``images`` [B, C, H, W]."""
    b = images.shape[0]
    area = _uniform(b, scale[0], scale[1], images)
    aspect = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), images).exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # fractions of the image side
    height = (area / aspect).sqrt().clamp(max=1.0)
    cx = _uniform(b, -1.0, 1.0, images) * (1 - width)  # crop centre, kept inside the image
    cy = _uniform(b, -1.0, 1.0, images) * (1 - height)
    zero = torch.zeros_like(width)
    theta = torch.stack([torch.stack([width, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def image_view(images: Tensor, cfg: ImageViewConfig) -> Tensor:
    """One random view of each image in [-1, 1]: crop, then Gaussian pixel noise."""
    out = random_resized_crop(images, cfg.crop_scale, cfg.crop_ratio)
    noise = torch.randn_like(out)
    return (out + cfg.noise_std * noise).clamp(-1.0, 1.0)


# ---------------------------------------------------------------- text


def stop_word_ids(vocab: Sequence[str]) -> list[int]:
    """Ids of the vocabulary's stop words (:data:`STOP_WORDS`)."""
    return [i for i, word in enumerate(vocab) if word in STOP_WORDS]


def _words(mask: Tensor) -> Tensor:
    """Word positions: real tokens after ``<cls>`` at position 0."""
    words = mask.clone()
    words[:, 0] = False
    return words


def compact(ids: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """The tokens where ``keep``, moved to the front in order; the rest padding (id 0)."""
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    positions = torch.arange(ids.shape[1], device=ids.device)
    mask = positions[None, :] < keep.sum(dim=1, keepdim=True)
    return torch.gather(ids, 1, order).masked_fill(~mask, 0), mask


def remove_stop_words(
    ids: Tensor, mask: Tensor, stop_ids: Tensor, prob: float
) -> tuple[Tensor, Tensor]:
    """With probability ``prob`` per caption drop its stop words, unless that would leave no
    word (clip-rocket's ``weak_augment`` keeps such a caption whole)."""
    chosen = torch.rand(ids.shape[0], device=ids.device) < prob
    words = _words(mask)
    stop = torch.isin(ids, stop_ids) & words & chosen[:, None]
    stop &= (words & ~stop).any(dim=1, keepdim=True)
    return compact(ids, mask & ~stop)


def random_swap(ids: Tensor, mask: Tensor, rows: Tensor) -> Tensor:
    """In each of ``rows`` with two words or more, exchange two distinct random words."""
    n = _words(mask).sum(dim=1)
    span = n.clamp_min(1)
    first = (torch.rand(n.shape, device=ids.device) * span).long().clamp(max=span - 1)
    shift = 1 + (torch.rand(n.shape, device=ids.device) * (span - 1)).long()
    second = 1 + (first + shift) % span
    first = first + 1
    swap = rows & (n >= 2)
    first, second = first.where(swap, 0), second.where(swap, 0)  # 0 <-> 0: no change
    rows_ = torch.arange(ids.shape[0], device=ids.device)
    out = ids.clone()
    out[rows_, first] = ids[rows_, second]
    out[rows_, second] = ids[rows_, first]
    return out


def random_deletion(ids: Tensor, mask: Tensor, prob: float, rows: Tensor) -> tuple[Tensor, Tensor]:
    """In each of ``rows`` delete every word with probability ``prob``; a caption that would
    lose them all keeps one random word (EDA's ``random_deletion``)."""
    words = _words(mask)
    drop = (torch.rand(ids.shape, device=ids.device) < prob) & words & rows[:, None]
    n = words.sum(dim=1)
    pick = (torch.rand(n.shape, device=ids.device) * n).long()
    survivor = (1 + pick.clamp(max=(n - 1).clamp_min(0))).clamp(max=ids.shape[1] - 1)
    emptied = (n > 0) & ~(words & ~drop).any(dim=1)
    rescue = torch.zeros_like(drop)
    rescue[torch.arange(ids.shape[0], device=ids.device), survivor] = emptied
    return compact(ids, mask & ~(drop & ~rescue))


def text_view(
    ids: Tensor, mask: Tensor, stop_ids: Tensor, cfg: TextViewConfig
) -> tuple[Tensor, Tensor]:
    """One EDA view of each caption: stop-word removal, then identity, swap or deletion.
    ``ids``/``mask`` [B, L] (``<cls>`` first, padding last); same shape out."""
    ids, mask = remove_stop_words(ids, mask, stop_ids, cfg.stop_word_prob)
    odds = torch.tensor(cfg.op_weights, device=ids.device, dtype=torch.float)
    op = torch.multinomial(odds, ids.shape[0], replacement=True)
    ids = random_swap(ids, mask, op == 1)
    return random_deletion(ids, mask, cfg.deletion_prob, op == 2)

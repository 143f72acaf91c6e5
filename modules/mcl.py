"""MCL, multistage contrastive learning (Zhang et al., "Learning the Unlearned: Mitigating
Feature Suppression in Contrastive Learning", ECCV 2024).

The loss is CLIP's; what changes is which samples may be negatives of each other. Before stage
``s`` every earlier stage's model embeds the training images; k-means (k = ``num_clusters``)
clusters each stage's L2-normalised image embeddings, and a sample's pseudo-label is the joint
assignment over all earlier stages, ``y_i = sum_r c_i^(r) k^(s-1-r)``. Training batches are then
drawn within one pseudo-label (the official ``MCL_batch_sampler_DDP``), so the in-batch negatives
of a sample share everything the earlier stages learned, and the contrastive loss must find
features those stages suppressed.

Following the official code: every stage starts from the same pretrained model (``init_from``
the pretraining stage) and the text tower is locked (``model.frozen: [text]``; the paper also
locks all but the last image blocks, which our small CNN does not have as groups). The earlier
stages are ``features_from`` (in stage order). The official ``cluster.py`` reloads the current
stage's labels in its loop over past stages; we implement the intended joint assignment. Each
stage's model is evaluated by itself, as the CLIP release does (the uni-modal experiments'
concatenation of stage representations is not implemented).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from modules.base import AlignmentModule, FitContext
from modules.clip import CLIP, CLIPConfig
from modules.clustering import joint_labels, kmeans
from modules.registry import METHODS


@dataclass
class MCLConfig(CLIPConfig):
    name: str = "mcl"
    num_clusters: int = 10  # k of k-means per earlier stage (the README's 10)
    kmeans_iters: int = 50
    loss_weights: dict[str, float] = field(default_factory=lambda: {"clip": 1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_clusters < 1:
            raise ValueError(f"num_clusters: must be positive, got {self.num_clusters}")


@torch.no_grad()
def train_item_embeddings(model: AlignmentModule, ctx: FitContext) -> torch.Tensor:
    """L2-normalised item-side (image) embeddings [N, D] of every training item, in item order."""
    side = model.modalities[0]
    model.eval()
    chunks, items = [], []
    for batch in ctx.loader(None):
        chunks.append(model.normalized(side, model.towers[side](batch)))
        items.append(batch["item_id"])
    embeddings, items = torch.cat(chunks).float(), torch.cat(items)
    out = torch.zeros(ctx.num_items, embeddings.shape[1])
    out[items] = embeddings
    return out


@METHODS.register("mcl", MCLConfig)
class MCL(CLIP):
    """CLIP on batches drawn within the joint clusters of the earlier stages' image features."""

    def prepare_fit(self, ctx: FitContext) -> None:
        """Cluster each earlier stage's training-image embeddings and draw batches within the
        joint clusters (no earlier stage: plain random batches, i.e. CLIP); log how the
        training set was grouped (how many groups, their sizes)."""
        if not ctx.earlier:
            ctx.group_batches(None)
            return
        cfg = self.method_cfg
        stage_labels = [
            kmeans(train_item_embeddings(model, ctx), cfg.num_clusters, cfg.kmeans_iters)[0]
            for model in ctx.earlier
        ]
        groups = joint_labels(stage_labels, cfg.num_clusters)
        ctx.group_batches(groups.numpy())
        sizes = torch.bincount(groups)
        ctx.log_metrics(
            {
                "mcl/groups": float((sizes > 0).sum()),
                "mcl/smallest_group": float(sizes[sizes > 0].min()),
                "mcl/largest_group": float(sizes.max()),
            }
        )

"""FDT: Finite Discrete Tokens (Chen et al., "Revisiting Multimodal Representation in Contrastive
Learning: From Patch and Token Embeddings to Finite Discrete Tokens", CVPR 2023).

Both modalities are re-expressed over one shared, learned codebook ``C in R^{K x d}`` of
"finite discrete tokens" (Sec. 3.2), so that an image and its caption are embedded as sparse
mixtures of the same vocabulary of concepts:

1. each token ``x_n`` of a tower (image patches / feature-map positions, text tokens) becomes a
   query ``q_n = phi_m(x_n)`` with a per-modality
   ``phi_m = LN -> Linear(d_x, d) -> GELU -> LN -> Linear(d, d)`` (the official ``Query_model``);
2. scores against every codebook entry ``a_nk = <q_n, c_k> / sqrt(d) / T_fdt`` (Eq. 1);
3. max-pooled over the tokens, ``a_k = max_n a_nk`` (Eq. 2; ``pool_type: max``);
4. normalised by sparsemax, ``w = sparsemax(a)`` (Eq. 3), so most weights are exactly 0;
5. the FDT embedding ``e = sum_k w_k c_k`` (Eq. 4), a point in the convex hull of ``C``;
6. CLIP's symmetric InfoNCE on the L2-normalised ``e`` of both modalities (Eq. 5).

``embedding(side, output)`` returns ``e``, so the loss, retrieval, zero-shot prompts and every
other metric read the FDT embedding, not the towers' pooled projections (which are unused).

Choices, checked against the official code (``yuxiaochen1103/FDT``,
``prototype/model/declip_fdt.py`` ``Query_model``, ``example/clip_fdt/config_cc3m.yaml``):

- codebook initialised ``randn(K, d)``; K = 16384 and d = 512 there, ``num_tokens`` (default
  1024, CPU budget) and ``model.embed_dim`` here; T_fdt = 1000, constant (``sd_T_decay_w: 1``);
- the query maps read the towers' *projected* tokens (``TowerOutput.tokens``, width
  ``embed_dim``); the official code reads the transformers' raw token features (768/512 wide);
- padding: the official code multiplies the scores of pad tokens by 0 before the max-pool, so a
  pad can still win the max with score 0. Here pad scores are set to -inf (excluded), the
  intended behaviour per the paper ("valid tokens") and methods/part1.md section 10;
- logit scale: the official CC3M run clamps the parameter log(1/T) to [3, 6] before and after
  every step (``grad_clip: logit_scale_param_value``) and its forward caps 1/T at 100, so 1/T
  stays in [e^3 = 20.1, 100]; ``official_scale_clamp: true`` keeps log(1/T) in
  [3, ln model.max_logit_scale] (the same range; the official parameter may drift above ln 100
  while the capped scale stays 100, here it is clamped there). Off by default: CLIP's clamp;
- ``Sparsemax`` there has a hand-written backward; here sparsemax is a closed form that autograd
  differentiates exactly (modules/losses/sparsemax.py, checked by gradcheck).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import Temperature
from modules.clip import CLIP, CLIPConfig
from modules.losses.sparsemax import sparsemax
from modules.registry import METHODS
from modules.towers.output import TowerOutput

#: Lower clamp of log(1/T) in the official CC3M config (``grad_clip.value``).
OFFICIAL_MIN_LOG_SCALE = 3.0


@dataclass
class FDTConfig(CLIPConfig):
    name: str = "fdt"
    num_tokens: int = 1024  # K, the codebook size (16384 in the paper)
    token_temperature: float = 1000.0  # T_fdt of the scores (official CC3M config)
    # True: the official run's logit-scale clamp (config_cc3m.yaml grad_clip
    # logit_scale_param_value: log(1/T) in [3, 6], with the forward capping 1/T at 100), i.e.
    # 1/T in [e^3, model.max_logit_scale]; False: CLIP's [1, model.max_logit_scale]
    official_scale_clamp: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tokens < 2:
            raise ValueError(f"num_tokens: need at least 2 codebook entries, got {self.num_tokens}")
        if self.token_temperature <= 0:
            raise ValueError(f"token_temperature: must be positive, got {self.token_temperature}")


def query_map(in_dim: int, dim: int) -> nn.Sequential:
    """``phi = LN -> Linear(in_dim, dim) -> GELU -> LN -> Linear(dim, dim)`` (``Query_model``)."""
    return nn.Sequential(
        nn.LayerNorm(in_dim),
        nn.Linear(in_dim, dim),
        nn.GELU(),
        nn.LayerNorm(dim),
        nn.Linear(dim, dim),
    )


def token_weights(
    queries: Tensor, codebook: Tensor, mask: Tensor | None, temperature: float
) -> Tensor:
    """Sparse codebook weights ``w [B, K] = sparsemax_k(max_n <q_n, c_k> / sqrt(d) / T)``.

    ``queries`` [B, N, d]; ``codebook`` [K, d]; ``mask`` [B, N] True for real tokens (None: all
    real); padded tokens are excluded from the max (score -inf).
    """
    scores = queries @ codebook.T / math.sqrt(codebook.shape[1]) / temperature  # [B, N, K]
    if mask is not None:
        scores = scores.masked_fill(~mask.bool().unsqueeze(-1), -math.inf)
    return sparsemax(scores.amax(dim=1), dim=-1)


@METHODS.register("fdt", FDTConfig)
class FDT(CLIP):
    """CLIP on the FDT embeddings ``e = sparsemax(max-pooled scores) @ C`` of both towers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: FDTConfig = self.method_cfg
        dim = self.hparams["model"]["embed_dim"]
        # shared by every modality: the same K tokens describe images and texts
        self.codebook = nn.Parameter(torch.randn(cfg.num_tokens, dim))
        self.queries = nn.ModuleDict({side: query_map(dim, dim) for side in self.modalities})
        self._active_tokens: dict[str, Tensor] = {}
        if cfg.official_scale_clamp:
            model = self.hparams["model"]
            self.temperature = Temperature(
                model["temperature"],
                model["learnable_temperature"],
                model["max_logit_scale"],
                max_temperature=math.exp(-OFFICIAL_MIN_LOG_SCALE),
            )

    def weights(self, side: str, output: TowerOutput) -> Tensor:
        """``w`` [B, K] of ``side`` from its token outputs."""
        if output.tokens is None:
            raise ValueError(f"FDT needs token outputs; the {side} tower returns only pooled ones")
        queries = self.queries[side](output.tokens)
        return token_weights(queries, self.codebook, output.mask, self.method_cfg.token_temperature)

    def embedding(self, side: str, output: TowerOutput) -> Tensor:
        """The FDT embedding ``e = w @ C`` [B, d] (unnormalised; the loss and metrics normalise)."""
        weights = self.weights(side, output)
        self._active_tokens[side] = (weights > 0).sum(dim=-1).float().mean().detach()
        return weights @ self.codebook

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """How sparse the weights are: ``fdt/active_tokens/<side>``, the mean number of codebook
        entries with a non-zero weight per sample (of K), from this step's embeddings."""
        return {f"fdt/active_tokens/{side}": n for side, n in self._active_tokens.items()}

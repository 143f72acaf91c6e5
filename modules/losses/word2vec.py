"""word2vec's CBOW with negative sampling (Mikolov et al. 2013, "Distributed Representations of
Words and Phrases and their Compositionality", Eq. 4), the objective of CADE (methods/part2.md
Sec. 51, gensim ``Word2Vec(sg=0, negative=k, cbow_mean=1)``) and of the word-embedding stage
of the Si-En alignment chain:

    l(w, ctx) = -log sigma(u_w . h) - sum_{n=1..k} log sigma(-u_{w_n} . h),
    h = (1 / |ctx|) sum_{c in ctx} W[c],

with ``W`` the input vectors (gensim ``syn0``: the embeddings that are used) and ``u`` the output
vectors (gensim ``syn1neg``). The mean over the batch is returned: a per-sample loss, so a DDP
rank's mean over its rows averages to the one-process value (no gathering).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cbow_negative_sampling(context: Tensor, center: Tensor, negatives: Tensor) -> Tensor:
    """Mean CBOW negative-sampling loss of ``B`` windows.

    ``context`` ``[B, D]``: the mean input vector ``h`` of each window's context words;
    ``center`` ``[B, D]``: the output vector ``u_w`` of the word to predict;
    ``negatives`` ``[B, K, D]``: the output vectors of the ``K`` noise words.
    """
    if context.shape != center.shape or negatives.shape[::2] != context.shape:
        raise ValueError(
            f"context and center must be [B, D] and negatives [B, K, D], got "
            f"{tuple(context.shape)}, {tuple(center.shape)}, {tuple(negatives.shape)}"
        )
    positive = F.logsigmoid((context * center).sum(-1))
    noise = F.logsigmoid(-(negatives @ context.unsqueeze(-1)).squeeze(-1)).sum(-1)
    return -(positive + noise).mean()

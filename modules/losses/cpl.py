"""CPL's loss terms (Sun et al., "Contrastive Pseudo Learning for Open-World DeepFake
Attribution", ICCV 2023; methods/part1.md section 3), restated from the official code
(``TencentYoutuResearch/OpenWorld-DeepFakeAttribution``: ``owdfa/algorithm/owssl/CPL.py``,
``owdfa/losses/losses.py``):

    L = L_mCE + eta1 L_GLV + eta2 L_CSP - eta3 H(p_bar),   p = softmax(l).

- :func:`margin_cross_entropy` (L_mCE): CE over the labelled items after the true-class logit is
  shifted by ``l_y - m s`` with the code's ``MarginLoss(m=-m_cfg, s=1)``, i.e. ``l_y + m_cfg``:
  the configured margin 0.2 *raises* the true logit (the sign of the code, opposite to ORCA's).
- :func:`glv_partners` (the global-local voting pairs) and :func:`glv_loss` (L_GLV =
  BCE(<p_a, p_pi(a)>, 1), torch's BCE clamping the log at -100).
- :func:`csp_loss` (L_CSP): Gumbel-softmax soft pseudo-labels ``r = softmax((sg(l) + g) /
  tau)`` of the unlabelled items, CE against ``r`` weighted by the (not detached) confidence
  ``p[argmax r]`` and the voting mask, averaged over the unlabelled items.
- :func:`mean_entropy` (H(p_bar)), the entropy of the batch's mean prediction, probabilities
  clamped at 1e-8 as the code's ``entropy``.

DDP: the code pairs items inside one batch; here the batch is the global one, whatever the
number of processes. Each loss takes this rank's LOCAL rows, gathers what it needs
(``gather_with_grad`` for the probabilities the pairs and the mean prediction read,
``gather_no_grad`` for counts), and divides its local sum by the global count over the world
size, so the mean of the ranks' losses is the one-process loss (tests/conformance/cases_cpl.py).
:func:`glv_partners` is a plain function of GLOBAL (gathered, detached) tensors; the caller
gathers them. The losses' random draws (which same-class partner, the Gumbel noise) are inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad, world_size

#: torch's BCELoss clamps its log terms at -100.
BCE_LOG_FLOOR = -100.0
#: the code's ``entropy`` clamps probabilities at 1e-8.
ENTROPY_EPS = 1e-8


def _global_mean(local_sum: Tensor, local_count: Tensor) -> Tensor:
    """``local_sum`` as this rank's share of the global mean: times W over the global count
    (0 when nothing counts anywhere)."""
    total = gather_no_grad(local_count.reshape(1)).sum()
    if total == 0:
        return local_sum * 0.0
    return local_sum * world_size() / total


def margin_cross_entropy(
    logits: Tensor, labels: Tensor, labelled: Tensor, margin: float, scale: float = 1.0
) -> Tensor:
    """L_mCE over the ``labelled`` rows (bool [b]) of ``logits`` [b, K]: CE after
    ``l_y <- l_y + margin * scale`` (the code's ``MarginLoss(m=-margin, s=scale)``); other
    rows' labels are not read. No labelled item: 0."""
    targets = torch.where(labelled, labels, torch.zeros_like(labels))
    shift = F.one_hot(targets, logits.shape[1]).to(logits.dtype) * (margin * scale)
    ce = F.cross_entropy(logits + shift, targets, reduction="none")
    return _global_mean((ce * labelled).sum(), labelled.sum())


@torch.no_grad()
def glv_partners(
    labels: Tensor,
    labelled: Tensor,
    global_feat: Tensor,
    part_feat: Tensor,
    choice: Tensor,
    choose_k: int = 2,
) -> tuple[Tensor, Tensor]:
    """The global-local voting pairs of a (global) batch: partner index [N] and the voting mask
    [N] (bool; True only for unlabelled anchors whose neighbour was accepted).

    - labelled anchor i: a labelled item of its class other than itself, the
      ``floor(choice[i] * count)``-th of them in batch order (``choice`` [N] in [0, 1): the
      code's ``np.random.choice``); itself when it is its class's only labelled item;
    - unlabelled anchor u: its nearest neighbour c by the cosine of ``global_feat`` [N, D] (the
      second of the row's top-2, the first being itself); part similarity
      ``PS(i, j) = sum_p w_p(i) cos(f_p(i), f_p(j))`` over ``part_feat`` [N, D, P] with
      ``w(i)`` = i's part-feature norms, L2-normalised over the parts; c is accepted when u's
      best non-self PS (second of its row's top-2) is >= the ``choose_k``-th largest PS of c's
      column; else the partner is the top-1 (u itself, barring exact ties).
    """
    n = labels.shape[0]
    partner = torch.arange(n, device=labels.device)
    voted = torch.zeros(n, dtype=torch.bool, device=labels.device)
    lab = torch.nonzero(labelled).flatten()
    for i in lab.tolist():
        same = lab[(labels[lab] == labels[i]) & (lab != i)]
        if len(same):
            partner[i] = same[(choice[i] * len(same)).long().clamp_max(len(same) - 1)]
    unl = torch.nonzero(~labelled).flatten()
    if len(unl) == 0:
        return partner, voted
    g = F.normalize(global_feat, dim=1)
    global_sim = g @ g.T
    norms = part_feat.norm(dim=1).clamp_min(1e-12)  # [N, P]
    unit = part_feat / norms[:, None, :]
    part_cos = torch.einsum("idp,jdp->ijp", unit, unit)  # [N, N, P]
    weights = norms / norms.norm(dim=1, keepdim=True)
    part_sim = (part_cos * weights[:, None, :]).sum(dim=2)  # weighted by the row (anchor)
    top_idx = global_sim[unl].topk(2, dim=1).indices
    best_row = part_sim[unl].topk(2, dim=1).values[:, 1]
    best_col = part_sim[:, top_idx[:, 1]].topk(choose_k, dim=0).values[choose_k - 1]
    accept = best_row >= best_col
    partner[unl] = torch.where(accept, top_idx[:, 1], top_idx[:, 0])
    voted[unl] = accept
    return partner, voted


def glv_loss(logits: Tensor, partner: Tensor) -> Tensor:
    """L_GLV: ``-log <p_a, p_partner(a)>`` (log clamped at -100, torch's BCE against 1) averaged
    over the global batch; ``logits`` [b, K] local rows, ``partner`` [b] indices into the global
    batch (rank r's rows are ``r b .. (r + 1) b - 1``)."""
    probs = logits.softmax(dim=1)
    partners = gather_with_grad(probs)[partner]
    agreement = (probs * partners).sum(dim=1)
    loss = -agreement.log().clamp_min(BCE_LOG_FLOOR)
    count = torch.tensor(len(loss), device=logits.device)
    return _global_mean(loss.sum(), count)


def csp_loss(
    logits: Tensor, gumbel: Tensor, voted: Tensor, unlabelled: Tensor, tau: float = 1.0
) -> Tensor:
    """L_CSP over the ``unlabelled`` rows (bool [b]) of ``logits`` [b, K]: soft pseudo-labels
    ``r = softmax((sg(l) + gumbel) / tau)`` (``gumbel`` [b, K]: -log(-log U) noise, the draw of
    ``F.gumbel_softmax``), ``CE_soft(l, r) * p[argmax r] * voted`` (confidence not detached),
    averaged over the unlabelled items. No unlabelled item: 0."""
    soft = ((logits.detach() + gumbel) / tau).softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    confidence = log_p.exp().gather(1, soft.argmax(dim=1, keepdim=True)).squeeze(1)
    ce = -(soft * log_p).sum(dim=1)
    per_item = ce * confidence * voted.to(ce.dtype) * unlabelled.to(ce.dtype)
    return _global_mean(per_item.sum(), unlabelled.sum())


def mean_entropy(logits: Tensor) -> Tensor:
    """H(p_bar): the entropy of the global batch's mean prediction (probabilities clamped at
    1e-8); the same value on every rank."""
    mean = gather_with_grad(logits.softmax(dim=1)).mean(dim=0).clamp_min(ENTROPY_EPS)
    return -(mean * mean.log()).sum()

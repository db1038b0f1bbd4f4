"""Set-prediction losses of CACMI (PDVC recipe): focal confidence, GIoU/L1 segments, event counter, caption NLL."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .matcher import HungarianMatcher, MatchIndices
from .segment_ops import elementwise_generalized_segment_iou, segment_cw_to_se, segment_se_to_cw

LAYER_LOSSES = ("loss_ce", "loss_giou", "loss_l1", "loss_counter")


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise binary focal loss (RetinaNet) of logits against {0, 1} targets, same shape, unreduced."""
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * bce


def counter_soft_mask(counts: torch.Tensor, num_bins: int, sigma: float) -> torch.Tensor:
    """Gaussian closeness exp(−(j − count)² / 2σ²) of every bin j to each count (B,) -> (B, num_bins)."""
    bins = torch.arange(num_bins, device=counts.device, dtype=torch.float32)  # (K+1,)
    return torch.exp(-((bins - counts[:, None].float()) ** 2) / (2 * sigma**2))  # (B, K+1)


def event_counter_loss(
    count_logits: torch.Tensor, counts: torch.Tensor, count_prior: torch.Tensor, sigma: float
) -> torch.Tensor:
    """PDVC's event-counter loss: per-bin BCE against the one-hot count, negatives eased by a Gaussian.

    Args:
        count_logits: (B, K+1) logits over the event counts 0..K.
        counts: (B,) true event counts; counts above K fall in bin K.
        count_prior: (K+1,) frequency of each count in the training set. Each bin's BCE is weighted
            by 1 − frequency, so frequent counts do not dominate (PDVC uses a hard-coded ActivityNet
            histogram here; we estimate it from the training set, see `estimate_count_prior`).
        sigma: σ of the Gaussian; a negative bin j is weighted by 1 − exp(−(j − count)²/2σ²), so
            near-miss counts are punished less than far ones.

    Returns:
        scalar: mean over bins and videos (a per-video quantity, not normalised by the event count).
    """
    num_bins = count_logits.shape[-1]
    if count_prior.shape != (num_bins,):
        raise ValueError(
            f"count_prior has {count_prior.numel()} entries but pred_counts has {num_bins} bins; "
            "set config.count_prior to max_event_count + 1 frequencies (see estimate_count_prior)."
        )
    counts = counts.clamp(max=num_bins - 1)  # (B,)
    one_hot = F.one_hot(counts.long(), num_bins).to(count_logits.dtype)  # (B, K+1)
    closeness = counter_soft_mask(counts, num_bins, sigma).to(count_logits.dtype)  # (B, K+1)
    bce = F.binary_cross_entropy_with_logits(
        count_logits, one_hot, weight=(1 - count_prior).to(count_logits), reduction="none"
    )  # (B, K+1)
    return (bce * (one_hot + (1 - closeness) * (1 - one_hot))).mean()


def caption_loss(log_probs: torch.Tensor, target_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Caption NLL of matched pairs: mean over each caption's tokens, then mean over the P captions.

    Args:
        log_probs: (P, T-1, V) log-probabilities predicted for positions 1..T-1 (teacher forcing).
        target_ids: (P, T) `[BOS, w1, .., wn, EOS, PAD, ..]`; the loss covers the words and EOS.
        pad_id: padding id, excluded from the loss.

    Returns:
        scalar. Averaging per caption first (as PDVC) gives every event the same weight whatever
        its caption length; 0 (still attached to the graph) when there are no pairs.
    """
    expected = (target_ids.shape[0], target_ids.shape[-1] - 1)
    if log_probs.dim() != 3 or target_ids.dim() != 2 or log_probs.shape[:2] != expected:
        raise ValueError(
            f"caption_loss expects log_probs (P, T-1, V) and target_ids (P, T); got {tuple(log_probs.shape)} "
            f"and {tuple(target_ids.shape)}."
        )
    if target_ids.shape[0] == 0:
        return log_probs.sum() * 0
    targets = target_ids[:, 1:]  # (P, T-1)
    token_mask = (targets != pad_id).to(log_probs.dtype)  # (P, T-1)
    nll = -log_probs.gather(-1, targets[..., None])[..., 0]  # (P, T-1)
    per_caption = (nll * token_mask).sum(1) / token_mask.sum(1).clamp(min=1)  # (P,)
    return per_caption.mean()


def estimate_count_prior(event_counts: Sequence[int], max_event_count: int) -> list[float]:
    """Frequencies of 0..K events per video (counts above K go to bin K), for `config.count_prior`."""
    counts = torch.as_tensor(list(event_counts), dtype=torch.long)
    if counts.numel() == 0:
        raise ValueError("estimate_count_prior got no event counts; pass one count per training video.")
    if max_event_count < 1:
        raise ValueError(f"estimate_count_prior: max_event_count must be >= 1, got {max_event_count}.")
    if (counts < 0).any():
        raise ValueError(f"estimate_count_prior: event counts must be >= 0, got {int(counts.min())}.")
    histogram = torch.bincount(counts.clamp(max=max_event_count), minlength=max_event_count + 1).double()
    return (histogram / histogram.sum()).tolist()


def layer_suffix(layer: int, num_layers: int) -> str:
    """Loss-key suffix of decoder layer `layer`: "" for the last one, "_{layer}" for auxiliary ones."""
    return "" if layer == num_layers - 1 else f"_{layer}"


class CACMICriterion(nn.Module):
    """Hungarian-matched set losses of every decoder layer (PDVC), normalised by the number of GT events."""

    def __init__(self, config):
        super().__init__()
        self.matcher = HungarianMatcher(
            class_cost=config.matcher_class_cost,
            giou_cost=config.matcher_giou_cost,
            l1_cost=config.matcher_l1_cost,
            focal_alpha=config.focal_alpha,
            focal_gamma=config.focal_gamma,
        )
        self.focal_alpha = config.focal_alpha
        self.focal_gamma = config.focal_gamma
        self.counter_sigma = config.counter_sigma
        self.aux_loss = config.aux_loss
        num_bins = config.max_event_count + 1
        prior = config.count_prior if config.count_prior is not None else [1.0 / num_bins] * num_bins
        if len(prior) != num_bins:
            raise ValueError(
                f"config.count_prior has {len(prior)} entries; it needs max_event_count + 1 = {num_bins}."
            )
        # a plain tuple, not a buffer: the saved model must not depend on the training-set statistics
        self.count_prior = tuple(float(p) for p in prior)
        coefficients = {
            "loss_ce": config.class_loss_coef,
            "loss_giou": config.giou_loss_coef,
            "loss_l1": config.l1_loss_coef,
            "loss_counter": config.counter_loss_coef,
            "loss_caption": config.caption_loss_coef,
        }
        num_layers = config.num_decoder_layers
        layers = range(num_layers) if config.aux_loss else [num_layers - 1]
        self.weight_dict = {
            key + layer_suffix(layer, num_layers): coef for layer in layers for key, coef in coefficients.items()
        }

    @staticmethod
    def num_events(target_mask: torch.Tensor, synchronize: bool = True) -> torch.Tensor:
        """Number of GT events in the batch, clamped >= 1; averaged over processes when `synchronize` under torch.distributed.

        Only training synchronises (the criterion's `training` flag): there every process runs the same steps and
        the gradients need one normaliser. An evaluation loss is per process, so a forward that one process runs
        alone (rank-0 evaluation, a gathered replica) reaches no collective and cannot dead-lock.
        """
        count = target_mask.sum().to(torch.float32)
        if synchronize and dist.is_available() and dist.is_initialized():
            count = count.clone()
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return count.clamp(min=1)

    def layer_losses(
        self,
        outputs: dict[str, torch.Tensor],
        target_segments: torch.Tensor,
        target_mask: torch.Tensor,
        indices: MatchIndices,
        num_events: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses of one decoder layer given its matching; keys without layer suffix."""
        logits = outputs["logits"]
        if logits.dim() == 3:
            logits = logits[..., 0]
        is_event = torch.zeros_like(logits)  # (B, N)
        is_event[indices.batch, indices.query] = 1
        losses = {
            "loss_ce": sigmoid_focal_loss(logits, is_event, self.focal_alpha, self.focal_gamma).sum() / num_events
        }
        matched_pred = outputs["pred_segments"][indices.batch, indices.query]  # (P, 2) cw
        matched_target = target_segments[indices.batch, indices.target].to(matched_pred)  # (P, 2) se
        giou = elementwise_generalized_segment_iou(segment_cw_to_se(matched_pred), matched_target)  # (P,)
        losses["loss_giou"] = (1 - giou).sum() / num_events
        losses["loss_l1"] = (matched_pred - segment_se_to_cw(matched_target)).abs().sum() / num_events
        if outputs.get("pred_counts") is not None:
            pred_counts = outputs["pred_counts"]
            prior = torch.tensor(self.count_prior, device=pred_counts.device, dtype=pred_counts.dtype)
            losses["loss_counter"] = event_counter_loss(
                pred_counts, target_mask.sum(1), prior, self.counter_sigma
            )
        return losses

    def forward(
        self, layer_outputs: list[dict[str, torch.Tensor]], targets: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[MatchIndices]]:
        """Match and compute the losses of every decoder layer (only the last one when config.aux_loss is off).

        Args:
            layer_outputs: one dict per decoder layer (last = final) with `logits (B, N)`,
                `pred_segments (B, N, 2)` cw and `pred_counts (B, K+1)` logits.
            targets: `segments (B, E, 2)` se normalised and `mask (B, E)` bool (True = real event).

        Returns:
            loss_dict: `loss_ce/giou/l1/counter` for the last layer and `..._{i}` for auxiliary
                layer i, unweighted (see `weight_dict`); focal/GIoU/L1 are divided by the number of
                GT events, the counter loss is a mean over videos.
            indices: the MatchIndices of each layer that got losses, in layer order (indices[-1] is the
                last layer's), to pick the matched pairs for the caption loss.
        """
        if not layer_outputs:
            raise ValueError("CACMICriterion got no decoder layer outputs.")
        target_segments, target_mask = targets["segments"], targets["mask"].bool()
        num_events = self.num_events(target_mask, synchronize=self.training)
        num_layers = len(layer_outputs)
        layers = range(num_layers) if self.aux_loss else [num_layers - 1]
        loss_dict, all_indices = {}, []
        for layer in layers:
            outputs = layer_outputs[layer]
            indices = self.matcher(outputs["logits"], outputs["pred_segments"], target_segments, target_mask)
            suffix = layer_suffix(layer, num_layers)
            losses = self.layer_losses(outputs, target_segments, target_mask, indices, num_events)
            loss_dict.update({key + suffix: value for key, value in losses.items()})
            all_indices.append(indices)
        return loss_dict, all_indices

    def total_loss(self, loss_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ coefficient · loss over the keys of `loss_dict` that have a coefficient in `weight_dict`."""
        return sum(self.weight_dict[key] * value for key, value in loss_dict.items() if key in self.weight_dict)


__all__ = [
    "CACMICriterion",
    "caption_loss",
    "estimate_count_prior",
    "event_counter_loss",
    "counter_soft_mask",
    "sigmoid_focal_loss",
    "layer_suffix",
    "LAYER_LOSSES",
]

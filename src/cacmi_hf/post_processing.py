"""Turn raw CACMI predictions into per-video event lists: rerank, keep the counted events, sort by start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .segment_ops import segment_cw_to_se

# PDVC's length normalisation of the caption score: Σ log p / (n_words ** 2 + 1e-5)
CAPTION_LENGTH_EXPONENT = 2.0
CAPTION_LENGTH_EPS = 1e-5
EVENT_COUNT_RULES = ("argmax", "expected")


def check_event_count(rule: str) -> str:
    """`rule` if it is one of `EVENT_COUNT_RULES`, else a ValueError naming the choices."""
    if rule not in EVENT_COUNT_RULES:
        raise ValueError(f"event_count must be one of {EVENT_COUNT_RULES}; got {rule!r}.")
    return rule


def event_counts(pred_counts: torch.Tensor, rule: str = "argmax") -> torch.Tensor:
    """Events to keep per video from the counter logits, (B, K+1) -> (B,) long, at least 1.

    "argmax" is PDVC's rule: the most likely count. "expected" is the mean count under the counter's
    per-bin probabilities (sigmoids, as the counter is trained with a per-bin BCE), normalised to sum to
    one and rounded. The counter's loss down-weights frequent counts (see `event_counter_loss`), which can
    leave its argmax below the true count when several bins are close; the mean uses them all.
    """
    if check_event_count(rule) == "argmax":
        return pred_counts.argmax(-1).clamp(min=1)
    probs = pred_counts.float().sigmoid()  # (B, K+1)
    probs = probs / probs.sum(-1, keepdim=True).clamp(min=1e-12)
    bins = torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype)  # (K+1,)
    return (probs * bins).sum(-1).round().long().clamp(min=1)  # (B,)


def caption_word_mask(caption_ids: torch.Tensor, pad_id: int, bos_id: int, eos_id: int) -> torch.Tensor:
    """(..., T) bool mask of the word tokens: not PAD/BOS/EOS and before the first EOS."""
    before_eos = (caption_ids == eos_id).long().cumsum(-1) == 0  # (..., T)
    return before_eos & (caption_ids != pad_id) & (caption_ids != bos_id) & (caption_ids != eos_id)


def caption_scores(
    caption_ids: torch.Tensor, caption_log_probs: torch.Tensor, pad_id: int, bos_id: int, eos_id: int
) -> torch.Tensor:
    """Length-normalised caption score Σ_words log p / (n_words² + 1e-5), (..., T) -> (...).

    As in PDVC's reranking, only word tokens count (EOS and padding do not, UNK does), and
    `caption_log_probs[..., t]` is the log-probability of `caption_ids[..., t]`.
    """
    words = caption_word_mask(caption_ids, pad_id, bos_id, eos_id)  # (..., T)
    total = (caption_log_probs.float() * words).sum(-1)  # (...)
    num_words = words.sum(-1).float()  # (...)
    return total / (num_words**CAPTION_LENGTH_EXPONENT + CAPTION_LENGTH_EPS)


def _decode(tokenizer: Any, word_ids: list[int]) -> str:
    """Caption text of word ids with a transformers tokenizer, a callable, or None (ids joined by spaces)."""
    if tokenizer is None:
        return " ".join(str(i) for i in word_ids)
    if hasattr(tokenizer, "decode"):
        return tokenizer.decode(word_ids, skip_special_tokens=True)
    if callable(tokenizer):
        return tokenizer(word_ids)
    raise ValueError(
        f"tokenizer must be a transformers tokenizer, a callable ids -> str, or None; got {type(tokenizer).__name__}."
    )


@torch.no_grad()
def post_process_dense_video_captioning(
    logits: torch.Tensor,
    pred_segments: torch.Tensor,
    pred_counts: torch.Tensor,
    caption_ids: torch.Tensor | None,
    caption_log_probs: torch.Tensor | None,
    durations: torch.Tensor,
    tokenizer: Any | Callable[[list[int]], str] | None = None,
    rerank_alpha: float = 1.0,
    threshold: float | None = None,
    max_events: int | None = None,
    event_count: str = "argmax",
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
) -> list[list[dict[str, Any]]]:
    """Events of each video, PDVC-style: rerank queries by caption + confidence, keep the counted top ones.

    score = sigmoid(logit); (center, length) -> (start, end) clamped to [0, 1] and scaled by the
    duration; joint = rerank_alpha · caption score + score (see `caption_scores`); the top-k queries
    by joint are kept, k from the event counter (`event_count`) clamped to [1, N]; they are returned
    sorted by start (then end).

    Args:
        logits: (B, N) confidence logits.
        pred_segments: (B, N, 2) normalised (center, length).
        pred_counts: (B, K+1) event-counter logits.
        caption_ids: (B, N, T) generated ids `[BOS, w.., EOS, PAD..]`, or None (no captions: empty
            strings and caption score 0).
        caption_log_probs: (B, N, T) log-probability of each generated id (None with caption_ids).
        durations: (B,) video durations in seconds.
        tokenizer: transformers tokenizer (`decode(ids, skip_special_tokens=True)`), a callable
            ids -> str, or None (captions are the word ids joined by spaces).
        rerank_alpha: weight of the caption score in the joint ranking score.
        threshold: if set, kept events whose confidence score is below it are dropped as well.
        max_events: if set, keep this many events per video instead of the counter's count.
        event_count: how the counter's logits give the count, "argmax" (PDVC) or "expected" (see
            `event_counts`).
        pad_token_id / bos_token_id / eos_token_id: special ids of the caption vocabulary.

    Returns:
        per video, a list of `{"timestamp": [start, end] seconds, "caption": str, "score": confidence,
        "query_index": int}`, JSON-serialisable.
    """
    if logits.dim() == 3 and logits.shape[-1] == 1:
        logits = logits[..., 0]
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, N); got {tuple(logits.shape)}.")
    batch_size, num_queries = logits.shape
    if pred_segments.shape != (batch_size, num_queries, 2):
        raise ValueError(
            f"pred_segments has shape {tuple(pred_segments.shape)}; "
            f"expected (B, N, 2) = ({batch_size}, {num_queries}, 2)."
        )
    if pred_counts.dim() != 2 or pred_counts.shape[0] != batch_size:
        raise ValueError(f"pred_counts has shape {tuple(pred_counts.shape)}; expected (B={batch_size}, K+1).")
    durations = torch.as_tensor(durations, dtype=torch.float32, device=logits.device).reshape(-1)
    if durations.shape != (batch_size,):
        raise ValueError(f"durations has {durations.numel()} values; expected one per video (B={batch_size}).")
    if (caption_ids is None) != (caption_log_probs is None):
        raise ValueError("caption_ids and caption_log_probs must be given together (or both None).")
    if caption_ids is not None and (
        caption_ids.shape[:2] != (batch_size, num_queries) or caption_log_probs.shape != caption_ids.shape
    ):
        raise ValueError(
            f"caption_ids {tuple(caption_ids.shape)} and caption_log_probs {tuple(caption_log_probs.shape)} "
            f"must both be (B, N, T) with (B, N) = ({batch_size}, {num_queries})."
        )
    check_event_count(event_count)  # also when max_events overrides it: a bad value never passes silently
    if max_events is not None and max_events < 1:
        raise ValueError(f"max_events must be >= 1 (or None to use the event counter); got {max_events}.")

    scores = logits.float().sigmoid()  # (B, N)
    segments = segment_cw_to_se(pred_segments.float()).clamp(0, 1) * durations[:, None, None]  # (B, N, 2)
    if caption_ids is not None:
        cap_scores = caption_scores(caption_ids, caption_log_probs, pad_token_id, bos_token_id, eos_token_id)
        words = caption_word_mask(caption_ids, pad_token_id, bos_token_id, eos_token_id)  # (B, N, T)
    else:
        cap_scores = torch.zeros_like(scores)
    joint = rerank_alpha * cap_scores + scores  # (B, N)

    if max_events is not None:
        keep_count = torch.full((batch_size,), max_events, device=logits.device)
    else:
        keep_count = event_counts(pred_counts, event_count)  # (B,)
    keep_count = keep_count.clamp(max=num_queries)
    rank = joint.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1, stable=True)  # (B, N) rank of each query
    keep = rank < keep_count[:, None]  # (B, N)
    if threshold is not None:
        keep &= scores >= threshold

    # order by (start, end): stable sort on end, then stable sort on start; dropped queries go last
    inf = torch.tensor(float("inf"), device=logits.device)
    by_end = torch.where(keep, segments[..., 1], inf).argsort(dim=-1, stable=True)  # (B, N)
    by_start = torch.where(keep, segments[..., 0], inf).gather(-1, by_end).argsort(dim=-1, stable=True)  # (B, N)
    order = by_end.gather(-1, by_start)  # (B, N)

    order_list = order.cpu().tolist()
    kept_per_video = keep.sum(-1).cpu().tolist()
    segments_list = segments.cpu().tolist()
    scores_list = scores.cpu().tolist()
    if caption_ids is not None:
        ids_list = caption_ids.cpu().tolist()
        words_list = words.cpu().tolist()

    results = []
    for b in range(batch_size):
        events = []
        for q in order_list[b][: kept_per_video[b]]:
            if caption_ids is not None:
                word_ids = [i for i, is_word in zip(ids_list[b][q], words_list[b][q]) if is_word]
                caption = _decode(tokenizer, word_ids)
            else:
                caption = ""
            events.append(
                {
                    "timestamp": [float(segments_list[b][q][0]), float(segments_list[b][q][1])],
                    "caption": str(caption),
                    "score": float(scores_list[b][q]),
                    "query_index": int(q),
                }
            )
        results.append(events)
    return results


__all__ = ["post_process_dense_video_captioning", "caption_scores", "caption_word_mask", "event_counts", "check_event_count", "EVENT_COUNT_RULES"]

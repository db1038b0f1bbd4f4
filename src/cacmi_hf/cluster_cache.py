"""CFA's Ward clustering of frozen frame features, computed once per video and looked up afterwards.

With precomputed (frozen) features a video's frames, and so its contiguous Ward clustering, are the same
at every epoch; only the greedy merges cost anything (L − c sequential steps per batch). The cache keys
each video by a fingerprint of its features — two random projections in float64, computed on the
features' own device (no copy of the features to the host), plus its valid length, c and the span limit —
and keeps the clustering on the CPU in a bounded LRU table. A batch runs Ward only on the videos it has
not seen, so from the second epoch on a training step does no Ward merges. Results are those of
`contiguous_ward_clustering` (each video's clustering does not depend on the others in its batch).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from .frame_aggregation import contiguous_ward_clustering


class WardClusterCache:
    """Bounded LRU table: video fingerprint -> (assignment `(L,)`, spans `(c, 2)`, cluster mask `(c,)`), on the CPU."""

    def __init__(self, max_videos: int = 100_000, seed: int = 0):
        if max_videos < 1:
            raise ValueError(f"WardClusterCache max_videos must be >= 1, got {max_videos}.")
        self.max_videos = max_videos
        self.seed = seed
        self._table: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._projections: dict[tuple, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._table)

    def clear(self) -> None:
        """Forget every cached clustering (and the hit/miss counts)."""
        self._table.clear()
        self.hits = self.misses = 0

    def _projection(self, length: int, dim: int, device: torch.device) -> torch.Tensor:
        """Fixed random weights `(2, L, D)` float64 (seeded, so fingerprints agree across processes)."""
        key = (length, dim, str(device))
        if key not in self._projections:
            generator = torch.Generator().manual_seed(self.seed)
            self._projections[key] = torch.randn(2, length, dim, generator=generator, dtype=torch.float64).to(device)
        return self._projections[key]

    def fingerprints(self, features: torch.Tensor, mask: torch.Tensor) -> list[tuple]:
        """One hashable key per video of `features (B, L, D)` / `mask (B, L)`: two projections and the valid length."""
        weights = self._projection(features.shape[1], features.shape[2], features.device)  # (2, L, D)
        valid = features.detach().to(torch.float64) * mask[..., None]  # (B, L, D), padding ignored
        sums = torch.einsum("bld,kld->bk", valid, weights).cpu().tolist()  # (B, 2): the one device->host copy
        lengths = mask.sum(1).cpu().tolist()
        return [(int(n), *s) for n, s in zip(lengths, sums)]

    def __call__(
        self, features: torch.Tensor, mask: torch.Tensor, num_clusters: int, max_span: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""
        `contiguous_ward_clustering(features, mask, num_clusters, max_span)`, computed only for unseen videos.

        Args:
            features (`(B, L, D)`): frame features.
            mask (`(B, L)` bool): True for valid frames.

        Returns:
            assignment `(B, L)` long, spans `(B, c, 2)` long, cluster_mask `(B, c)` bool, on the features' device.
        """
        keys = [(key, num_clusters, max_span) for key in self.fingerprints(features, mask)]
        missing = [b for b, key in enumerate(keys) if key not in self._table]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            index = torch.tensor(missing, device=features.device)
            assignment, spans, cluster_mask = contiguous_ward_clustering(
                features[index], mask[index], num_clusters, max_span
            )
            # int16 on the CPU: ~250 bytes a video at L = 100, so a full table stays a few tens of MB
            small = assignment.to(torch.int16).cpu(), spans.to(torch.int16).cpu(), cluster_mask.cpu()
            for row, b in enumerate(missing):
                self._table[keys[b]] = (small[0][row], small[1][row], small[2][row])
                while len(self._table) > self.max_videos:
                    self._table.popitem(last=False)  # least recently used
        rows = []
        for key in keys:
            self._table.move_to_end(key)
            rows.append(self._table[key])
        device = features.device
        assignment = torch.stack([row[0] for row in rows]).to(device=device, dtype=torch.long)  # (B, L)
        spans = torch.stack([row[1] for row in rows]).to(device=device, dtype=torch.long)  # (B, c, 2)
        return assignment, spans, torch.stack([row[2] for row in rows]).to(device)


__all__ = ["WardClusterCache"]

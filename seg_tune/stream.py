"""The training stream: utterances joined by the utterance-boundary token, packed into blocks.

    UTT u1 u1 u1 UTT u2 u2 UTT u3 ... UTT

Blocks are consecutive, non-overlapping windows of `block_size` tokens. Each epoch starts the
windows at a different offset (drawn from the run's seed), so block edges move between epochs,
and visits the blocks in a seeded random order. The order of epoch e depends only on (seed, e):
the data position of a run is therefore fully given by its step, which makes resuming exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_stream(ids_per_utterance: Sequence[Sequence[int]], boundary_id: int) -> torch.Tensor:
    """1-D LongTensor: a boundary token before, between and after the utterances."""
    flat: list[int] = [boundary_id]
    for ids in ids_per_utterance:
        flat.extend(ids)
        flat.append(boundary_id)
    return torch.tensor(flat, dtype=torch.long)


def blocks(stream: torch.Tensor, block_size: int, offset: int = 0) -> torch.Tensor:
    """(n_blocks, block_size) view of the stream from `offset`; the ragged tail is dropped."""
    usable = stream[offset:]
    n = usable.numel() // block_size
    return usable[: n * block_size].view(n, block_size)


class BlockSampler:
    """Deterministic batches of blocks: batch `i` of the whole run is a function of (seed, i)."""

    def __init__(self, stream: torch.Tensor, block_size: int, batch_size: int, seed: int) -> None:
        if stream.numel() < 2 * block_size:
            raise ValueError(
                f"the training stream has {stream.numel()} tokens, fewer than two blocks of "
                f"{block_size}; use more data or a smaller training.block_size"
            )
        self.stream, self.block_size, self.batch_size, self.seed = (
            stream,
            block_size,
            batch_size,
            seed,
        )
        # Every epoch has the same number of whole batches, whatever its offset.
        self.batches_per_epoch = max(1, (stream.numel() - block_size) // block_size // batch_size)
        self._epoch = -1
        self._order: torch.Tensor | None = None
        self._blocks: torch.Tensor | None = None

    def position(self, batch_index: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of a global batch index."""
        return divmod(batch_index, self.batches_per_epoch)

    def batch(self, batch_index: int) -> torch.Tensor:
        """(batch_size, block_size) LongTensor for the global batch `batch_index`."""
        epoch, within = self.position(batch_index)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            offset = int(torch.randint(self.block_size, (1,), generator=gen))
            self._blocks = blocks(self.stream, self.block_size, offset)
            self._order = torch.randperm(self._blocks.shape[0], generator=gen)
            self._epoch = epoch
        assert self._order is not None and self._blocks is not None
        rows = self._order[within * self.batch_size : (within + 1) * self.batch_size]
        return self._blocks[rows]

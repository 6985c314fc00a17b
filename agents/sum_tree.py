"""Sum tree for proportional prioritized replay, held in torch tensors on the training device.

Proportional prioritization (Schaul et al. 2016, "Prioritized Experience Replay", sec. 3.3 and
appendix B.2.1) samples transition i with probability P(i) = p_i / sum_k p_k, the leaf values
p_i being the priorities already raised to alpha. A sum tree makes both an update and a draw
cost one pass over the tree's levels: every inner node holds the sum of its children, so a mass
u drawn from [0, total) and walked down from the root, at each node into the child whose
prefix-sum interval holds it, ends at leaf i with probability p_i / total.

Dopamine (``replay_memory/sum_tree.py``) and DQN Zoo (``replay.SumTree``) keep a binary tree in
numpy and set or query one index at a time in Python. This one differs in three ways:

* the levels are torch tensors on the training device (leaves first, root last), so priorities
  never travel to the host;
* nodes have ``FANOUT`` = 32 children, so the tree is shallow: a draw among a million leaves is
  4 steps down, and each step is a handful of kernel launches whatever the batch size;
* ``set`` and ``query`` take whole batches. The only Python loop runs over the levels (a count
  fixed at construction, not data-dependent), never over indices or samples, and nothing is read
  back to the host (no ``.item()``, no device sync).

``set`` recomputes the ancestors of the leaves it writes from their children instead of adding
deltas to them (as Dopamine does, accepting "some tolerable numerical inaccuracies"), so every
node stays the sum of its children and no rounding drift builds up over millions of updates.
``check_valid`` verifies that and the rest of the layout with a host sync, for tests and tools,
as DQN Zoo's ``check_valid`` does for its replay parts.
"""

from __future__ import annotations

import torch

__all__ = ["FANOUT", "SumTree", "default_dtype"]

FANOUT = 32
"""Children per node. A wide tree means few levels (a descent of 4 steps for 1M leaves): each
level is a handful of kernel launches, so depth, not width, sets the cost of a batched descent,
and the inner nodes cost only about 1/31 of the leaves in memory."""


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The node dtype for ``device``."""
    # float64 keeps sums of a million priorities exact enough; MPS has no float64.
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class SumTree:
    """Non-negative leaf values and the sums above them, for batched proportional sampling.

    ``levels[0]`` holds the leaves and ``levels[-1]`` the root (one element, the ``total``).
    Every level but the root is padded with zeros to a multiple of ``fanout``, so that it views
    as (parents, fanout) and node ``i`` of a level has children ``i * fanout ..`` in the level
    below; leaves at and beyond ``num_leaves`` stay zero.
    """

    def __init__(
        self,
        num_leaves: int,
        device: torch.device | str,
        *,
        dtype: torch.dtype | None = None,
        fanout: int = FANOUT,
    ):
        if num_leaves < 1:
            raise ValueError(f"a sum tree needs at least one leaf, got {num_leaves}")
        if fanout < 2:
            raise ValueError(f"a sum tree needs a fan-out of at least 2, got {fanout}")
        self.num_leaves = int(num_leaves)
        self.fanout = int(fanout)
        self.device = torch.device(device)
        self.dtype = default_dtype(self.device) if dtype is None else dtype
        self.levels = [
            torch.zeros(size, dtype=self.dtype, device=self.device)
            for size in self.level_sizes(self.num_leaves, self.fanout)
        ]
        # Every level but the root seen as (parents, fanout) blocks of siblings, made once: a view
        # per call would be one more dispatched op on every step of every write and draw.
        self._blocks = [level.view(-1, self.fanout) for level in self.levels[:-1]]
        self._zero = torch.zeros((), dtype=self.dtype, device=self.device)

    @staticmethod
    def level_sizes(num_leaves: int, fanout: int = FANOUT) -> list[int]:
        """Lengths of the level tensors, leaves first, root (1) last: what the tree allocates."""
        sizes = [-(-num_leaves // fanout) * fanout]
        while sizes[-1] > 1:
            m = sizes[-1] // fanout
            sizes.append(m if m == 1 else -(-m // fanout) * fanout)
        return sizes

    @property
    def total(self) -> torch.Tensor:
        """The sum of all leaves: a 0-d view of the root, on the device (reading it syncs)."""
        return self.levels[-1][0]

    @property
    def nbytes(self) -> int:
        return sum(level.numel() * level.element_size() for level in self.levels)

    def get(self, index: torch.Tensor) -> torch.Tensor:
        """Leaf values at ``index`` (any shape)."""
        return self.levels[0][index]

    def set(self, index: torch.Tensor, value: torch.Tensor) -> None:
        """Write leaves (1-d ``index``), then recompute their ancestors from their children.

        Recomputing (not adding deltas) keeps every node the exact sum of its children, so no
        rounding drift accumulates over millions of updates. Duplicate indices write identical
        parent values, so the result does not depend on which duplicate wins.
        """
        if value.dtype != self.dtype:
            value = value.to(self.dtype)
        self.levels[0].index_put_((index,), value)
        idx = index
        for blocks, upper in zip(self._blocks, self.levels[1:], strict=True):
            idx = idx // self.fanout
            upper.index_put_((idx,), blocks.index_select(0, idx).sum(1))

    def rebuild(self) -> None:
        """Recompute every inner node from the leaves (after writing ``levels[0]`` directly)."""
        for lower, upper in zip(self.levels[:-1], self.levels[1:], strict=True):
            sums = lower.view(-1, self.fanout).sum(1)
            upper.zero_()
            upper[: sums.numel()] = sums

    def query(self, mass: torch.Tensor) -> torch.Tensor:
        """Leaf index whose prefix-sum interval holds each ``mass`` (1-d, >= 0): all at once.

        That is the first leaf whose inclusive prefix sum exceeds the mass, the one
        ``searchsorted(cumsum(leaves), mass, side="right")`` finds: exactly so where the sums are
        exact (integer leaves, say), otherwise up to rounding at the boundaries.

        At each level the child is the first whose cumulative sum exceeds the mass. A child of
        zero weight never is (its cumulative sum equals its left neighbour's), and the mass is
        kept strictly below its node's total so rounding cannot walk off the right end: every
        mass, even one at or above ``total``, lands on a leaf of positive weight, provided
        ``total`` > 0.
        """
        f = self.fanout
        # Sums are compared in the promoted dtype of the masses and the nodes, as plain tensor
        # arithmetic would (the usual case, masses in the tree's dtype, converts nothing).
        dtype = self.dtype if mass.dtype == self.dtype else torch.promote_types(mass.dtype, self.dtype)
        mass = (mass if mass.dtype == dtype else mass.to(dtype)).unsqueeze(1)  # (B, 1) down to the leaves
        idx = torch.zeros(mass.shape[0], dtype=torch.int64, device=mass.device)
        zero = torch.zeros((mass.shape[0], 1), dtype=self.dtype, device=mass.device)
        for blocks in reversed(self._blocks):
            csum = blocks.index_select(0, idx).cumsum(1)
            total = csum[:, -1:]
            mass = torch.minimum(mass, torch.nextafter(total, self._zero))
            # The first child whose cumulative sum exceeds the mass: the sums are non-decreasing
            # (children are >= 0), so that is how many of them are <= the mass.
            child = torch.searchsorted(csum if csum.dtype == dtype else csum.to(dtype), mass, right=True)
            child.clamp_(max=f - 1)
            below = torch.cat([zero, csum], 1).gather(1, child)
            mass = (mass - below).clamp_(min=0)
            idx = torch.add(child.squeeze(1), idx, alpha=f)
        return idx

    def draw(self, u: torch.Tensor) -> torch.Tensor:
        """Leaves for uniform numbers ``u`` in [0, 1) (1-d): leaf i with probability p_i / total."""
        return self.query(u * self.levels[-1])  # the root level is (1,): it broadcasts, no indexing

    def nonzero(self) -> torch.Tensor:
        """Indices of the leaves with positive value, ascending (a host sync)."""
        return torch.nonzero(self.levels[0][: self.num_leaves] > 0).squeeze(1)

    def check_valid(self) -> tuple[bool, str]:
        """Internal consistency, as (ok, what is wrong); a host sync, for tests and tools.

        Checks the level sizes, that the leaves are finite and non-negative, that padding holds
        zeros and that each inner node is the sum of its children, up to the rounding of one sum
        of ``fanout`` terms (the order in which a reduction adds them is the backend's choice).
        """
        sizes = self.level_sizes(self.num_leaves, self.fanout)
        got = [level.numel() for level in self.levels]
        if got != sizes:
            return False, f"level sizes are {got}, expected {sizes}"
        leaves = self.levels[0]
        if not bool(torch.isfinite(leaves).all()):
            return False, "a leaf is not finite"
        if bool((leaves < 0).any()):
            return False, "a leaf is negative"
        if bool((leaves[self.num_leaves :] != 0).any()):
            return False, f"a padding leaf (index >= {self.num_leaves}) is not zero"
        rtol = self.fanout * torch.finfo(self.dtype).eps
        for i, (lower, upper) in enumerate(zip(self.levels[:-1], self.levels[1:], strict=True)):
            sums = lower.view(-1, self.fanout).sum(1)
            if bool((upper[sums.numel() :] != 0).any()):
                return False, f"a padding node of level {i + 1} is not zero"
            if not bool(torch.isclose(upper[: sums.numel()], sums, rtol=rtol, atol=0).all()):
                bad = int(torch.nonzero(~torch.isclose(upper[: sums.numel()], sums, rtol=rtol, atol=0))[0])
                return False, f"node {bad} of level {i + 1} is not the sum of its children"
        return True, ""

"""The device sum tree against a brute-force reference: numpy leaves, cumsum and searchsorted.

A draw of mass m must land on the first leaf whose inclusive prefix sum exceeds m, which is
``searchsorted(cumsum(leaves), m, side="right")``. With integer leaves every partial sum and
every mass left over on the way down is exact in float64, so the tree must agree exactly, masses
on interval boundaries included; with real-valued leaves it may differ only where rounding
moves a boundary, and then only onto a neighbouring leaf of positive weight.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelplay.agents.sum_tree import FANOUT, SumTree, default_dtype

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def integer_leaves(rng: np.random.Generator, n: int, p_zero: float = 0.4) -> np.ndarray:
    values = rng.integers(1, 1000, n).astype(np.float64)
    values[rng.random(n) < p_zero] = 0.0
    return values


def tree_with(leaves: np.ndarray, device="cpu", fanout=FANOUT, dtype=None) -> SumTree:
    tree = SumTree(len(leaves), device, fanout=fanout, dtype=dtype)
    index = torch.arange(len(leaves), device=device)
    tree.set(index, torch.from_numpy(leaves).to(device))
    return tree


def reference_query(leaves: np.ndarray, mass: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(leaves), mass, side="right")


def test_level_sizes():
    assert SumTree.level_sizes(1) == [32, 1]
    assert SumTree.level_sizes(32) == [32, 1]
    assert SumTree.level_sizes(33) == [64, 32, 1]
    assert SumTree.level_sizes(5, fanout=2) == [6, 4, 2, 1]
    # A million leaves: 4 steps down from the root, inner nodes about 1/31 of the leaves.
    sizes = SumTree.level_sizes(1_000_000)
    assert sizes == [1_000_000, 31_264, 992, 32, 1]
    assert sum(sizes[1:]) / sizes[0] < 1 / 30
    tree = SumTree(1000, "cpu", fanout=3)
    assert [level.numel() for level in tree.levels] == SumTree.level_sizes(1000, fanout=3)
    assert tree.nbytes == sum(SumTree.level_sizes(1000, fanout=3)) * 8


def test_default_dtype():
    assert default_dtype("cpu") == torch.float64
    assert default_dtype(torch.device("mps")) == torch.float32  # MPS has no float64
    assert SumTree(10, "cpu").dtype == torch.float64


def test_refuses_empty_tree_and_unary_fanout():
    with pytest.raises(ValueError, match="at least one leaf"):
        SumTree(0, "cpu")
    with pytest.raises(ValueError, match="fan-out of at least 2"):
        SumTree(10, "cpu", fanout=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_leaves,fanout", [(1, 32), (7, 2), (1000, 3), (1000, 32), (5000, 32), (4096, 4)])
def test_query_matches_searchsorted_exactly_on_integer_leaves(device, num_leaves, fanout):
    rng = np.random.default_rng(num_leaves * 10 + fanout)
    leaves = integer_leaves(rng, num_leaves)
    leaves[rng.integers(num_leaves)] = 7.0  # at least one positive leaf
    tree = tree_with(leaves, device, fanout)
    total = leaves.sum()
    assert float(tree.total) == total
    cumsum = np.cumsum(leaves)
    # Random masses, every interval boundary below the total, and 0.
    mass = np.concatenate([rng.random(2000) * total, cumsum[cumsum < total], [0.0]])
    got = tree.query(torch.from_numpy(mass).to(device)).cpu().numpy()
    np.testing.assert_array_equal(got, reference_query(leaves, mass))
    assert (leaves[got] > 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_query_on_real_leaves_differs_only_at_rounded_boundaries(device, dtype):
    rng = np.random.default_rng(5)
    n = 3000
    leaves = rng.exponential(size=n) ** 3
    leaves[rng.random(n) < 0.3] = 0.0
    leaves = torch.from_numpy(leaves).to(dtype).double().numpy()  # the values the tree holds
    tree = tree_with(leaves, device, dtype=dtype)
    cumsum = np.cumsum(leaves)
    mass = rng.random(20_000) * float(tree.total)
    got = tree.query(torch.from_numpy(mass).to(device, dtype)).cpu().numpy()
    want = reference_query(leaves, torch.from_numpy(mass).to(dtype).double().numpy())
    assert (leaves[got] > 0).all()
    differ = np.flatnonzero(got != want)
    assert differ.size <= mass.size // 1000
    # A disagreement is a mass within rounding of the boundary between the two leaves.
    tol = 64 * torch.finfo(dtype).eps * cumsum[-1]
    for i in differ:
        lo, hi = sorted((got[i], want[i]))
        boundary = cumsum[lo:hi]  # prefix sums between the two choices
        assert np.abs(boundary - mass[i]).min() <= tol
        assert (leaves[lo + 1 : hi] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_query_lands_on_positive_leaves_at_the_ends(device):
    leaves = np.zeros(1000)
    leaves[[100, 101, 640]] = [2.0, 3.0, 5.0]
    tree = tree_with(leaves, device, fanout=4)
    total = float(tree.total)
    mass = torch.tensor(
        [0.0, 1.999, 2.0, 4.999, 5.0, 9.999, total, total * 2, float("inf")], dtype=torch.float64
    )
    got = tree.query(mass.to(device)).tolist()
    # Masses at or past the total stay on the last positive leaf instead of walking off the end.
    assert got == [100, 100, 101, 101, 640, 640, 640, 640, 640]


@pytest.mark.parametrize("device", DEVICES)
def test_totals_after_batched_updates(device):
    rng = np.random.default_rng(2)
    n = 1000
    reference = np.zeros(n)
    tree = SumTree(n, device, fanout=8)
    for _ in range(300):
        index = rng.choice(n, size=int(rng.integers(1, 200)), replace=False)
        value = integer_leaves(rng, index.size, p_zero=0.3)
        reference[index] = value
        tree.set(torch.from_numpy(index).to(device), torch.from_numpy(value).to(device))
        assert float(tree.total) == reference.sum()
    np.testing.assert_array_equal(tree.levels[0][:n].cpu().numpy(), reference)
    assert tree.check_valid() == (True, "")
    np.testing.assert_array_equal(tree.nonzero().cpu().numpy(), np.flatnonzero(reference))
    probe = torch.from_numpy(rng.integers(0, n, (4, 5))).to(device)
    np.testing.assert_array_equal(tree.get(probe).cpu().numpy(), reference[probe.cpu().numpy()])


@pytest.mark.parametrize("device", DEVICES)
def test_no_drift_after_many_real_updates(device):
    # Ancestors are recomputed, not adjusted by deltas: after thousands of real-valued updates,
    # integer leaves give an exact integer total again.
    rng = np.random.default_rng(3)
    n = 2000
    tree = SumTree(n, device)
    for _ in range(2000):
        index = torch.from_numpy(rng.integers(0, n, 64)).to(device)
        tree.set(index, torch.from_numpy(rng.random(64) * 1e3).to(device))
        assert tree.check_valid()[0]
    leaves = integer_leaves(rng, n, p_zero=0.0)
    tree.set(torch.arange(n, device=device), torch.from_numpy(leaves).to(device))
    assert float(tree.total) == leaves.sum()


@pytest.mark.parametrize("device", DEVICES)
def test_duplicate_indices_keep_one_value_and_consistent_sums(device):
    tree = SumTree(100, device, fanout=4)
    index = torch.tensor([5, 5, 5, 70, 70], device=device)
    value = torch.tensor([1.0, 2.0, 3.0, 4.0, 8.0], dtype=torch.float64, device=device)
    tree.set(index, value)
    assert float(tree.get(torch.tensor(5))) in (1.0, 2.0, 3.0)
    assert float(tree.get(torch.tensor(70))) in (4.0, 8.0)
    assert float(tree.total) == float(tree.get(torch.tensor(5))) + float(tree.get(torch.tensor(70)))
    assert tree.check_valid() == (True, "")


def test_rebuild_after_writing_leaves_directly():
    rng = np.random.default_rng(4)
    leaves = integer_leaves(rng, 777)
    tree = SumTree(777, "cpu", fanout=5)
    tree.levels[0][:777] = torch.from_numpy(leaves)
    assert not tree.check_valid()[0]
    tree.rebuild()
    assert tree.check_valid() == (True, "")
    assert float(tree.total) == leaves.sum()


def test_check_valid_finds_each_inconsistency():
    def fresh():
        return tree_with(np.arange(1.0, 101.0), fanout=4)

    assert fresh().check_valid() == (True, "")
    tree = fresh()
    tree.levels[2][3] += 1.0
    assert tree.check_valid() == (False, "node 3 of level 2 is not the sum of its children")
    tree = fresh()
    tree.levels[0][7] = -1.0
    assert tree.check_valid() == (False, "a leaf is negative")
    tree = fresh()
    tree.levels[0][7] = float("nan")
    assert tree.check_valid() == (False, "a leaf is not finite")
    tree = SumTree(99, "cpu", fanout=4)  # 100 leaf slots, the last one padding
    tree.levels[0][99] = 1.0
    assert tree.check_valid() == (False, "a padding leaf (index >= 99) is not zero")
    tree = SumTree(100, "cpu", fanout=4)  # level 1 holds 25 sums padded to 28
    tree.levels[1][26] = 1.0
    assert tree.check_valid() == (False, "a padding node of level 1 is not zero")
    tree = fresh()
    tree.levels.pop(1)
    assert not tree.check_valid()[0] and "level sizes" in tree.check_valid()[1]

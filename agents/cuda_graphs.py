"""Acting from a captured CUDA graph: one launch for the whole small tensor program of a step.

Choosing the actions of a few envs is ~20-40 small kernels (the conv stack at batch N, the
sampling, the epsilon mix). On a GPU each launch costs ~5-10 us of host time whatever the
kernel's size, so at a small batch the launches, not the arithmetic, set the time. A CUDA graph
records the kernels once and replays them with one launch (PyTorch's "CUDA Graphs" notes,
``torch.cuda.graph``; NVIDIA's CUDA Programming Guide, "CUDA Graphs").

What that asks of the captured function, and how the agents meet it:

* fixed shapes and no host sync inside: the acting functions take the observation batch (and a
  recurrent state, and epsilon as a 0-d tensor) and return tensors, with no ``.item()``;
* inputs and outputs live in static buffers: a call copies its inputs in, replays the graph and
  returns *clones* of the outputs, which the next replay would overwrite;
* parameters are read where they are: optimizer steps and ``load_state_dict`` write into the
  same tensors, so the graph always acts with the current weights;
* random numbers: ``torch.rand``, ``randint`` and ``multinomial`` draw from the default CUDA
  generator, whose offset PyTorch advances on every replay, so each replay draws fresh numbers
  (not the numbers eager mode would have drawn: same distribution, another stream).

Behind the agents' ``cuda_graphs`` flag, off by default: unmeasured on a GPU so far. A no-op on
other devices, so that a checkpoint trained with it evaluates anywhere.

Only acting is captured. DQN's gradient step has fixed shapes too, but capturing it would also
need Adam's ``capturable`` mode, the annealed importance exponent and the learning rate as device
tensors, the replay's own random generator registered with the graph and its host-side checks
moved out of the captured part: too much to change without a GPU to check it on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["CudaGraph", "GraphCache"]


class CudaGraph:
    """``fn`` over fixed-shape CUDA tensors, captured once and replayed from a graph.

    ``inputs`` are example inputs: tensors, or Python numbers (held as 0-d float tensors and
    refilled on each call). ``fn`` first runs ``warmup`` times on a side stream, as PyTorch's
    notes require, so that lazy set-up (cuDNN's algorithm search, the autocast cache, memory
    pools) happens outside the capture; then once under capture.
    """

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor | float],
                 warmup: int = 3):
        device = next(x.device for x in inputs if isinstance(x, torch.Tensor))
        if device.type != "cuda":
            raise ValueError(f"a CUDA graph needs CUDA tensors, got tensors on {device}")
        self._inputs = [
            x.detach().clone() if isinstance(x, torch.Tensor) else torch.tensor(float(x), device=device)
            for x in inputs
        ]
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    fn(*self._inputs)
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._outputs = tuple(fn(*self._inputs))

    def __call__(self, *inputs: torch.Tensor | float) -> tuple[torch.Tensor, ...]:
        for static, x in zip(self._inputs, inputs, strict=True):
            if isinstance(x, torch.Tensor):
                static.copy_(x)
            else:
                static.fill_(x)
        self._graph.replay()
        return tuple(out.clone() for out in self._outputs)


class GraphCache:
    """The captured graphs of one agent, one per function name and input shapes, captured on first use.

    ``enabled`` only on a CUDA device; elsewhere the agent calls its functions eagerly.
    """

    def __init__(self, device: torch.device, requested: bool):
        self.enabled = bool(requested) and torch.device(device).type == "cuda"
        self._graphs: dict[tuple, CudaGraph] = {}

    def __call__(self, name: str, fn: Callable[..., Sequence[torch.Tensor]],
                 *inputs: torch.Tensor | float) -> tuple[torch.Tensor, ...]:
        key = (name, *(tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in inputs))
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = CudaGraph(fn, inputs)
        return graph(*inputs)

    def clear(self) -> None:
        """Forget every graph (they are captured again on next use)."""
        self._graphs.clear()

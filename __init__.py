"""pixelplay: deep RL agents that learn Atari and ViZDoom from pixels.

The checkout's folders are the package's subpackages (``pyproject.toml`` maps the repository root
to ``pixelplay``): ``pixelplay.envs`` (env boundary), ``pixelplay.agents`` (networks, replay,
algorithms), ``pixelplay.eval`` (the eval harness) and ``pixelplay.train`` (the training CLI),
in that order of layers. Importing the package imports none of them.
"""

__version__ = "0.1.0"

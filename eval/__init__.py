"""pixelplay's evaluation harness: ``python -m pixelplay.eval {doom-table,score,record,watch,plot} ...``.

* `eval.doom_table`: the human-vs-agent DOOM table of Lample & Chaplot 2017 (single player
  against the built-in bots, multiplayer over loopback), with this project's agent in it;
* `eval.score`: Atari / ViZDoom scores under the standard protocol, human-normalised, beside
  the published references of `eval.baselines`;
* `eval.record`: MP4 videos of full episodes at the game's native resolution (and
  `eval.record.PeriodicRecorder`, which ``train.py --capture-video`` calls);
* `eval.plot`: learning curves and the DOOM table as PNG files.

Importing the package imports nothing heavy; each command loads what it needs.
"""

"""The installed package: one top-level name, no module under two names, entry points that work."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    return [name for name in listed if (ROOT / name).is_file()]


def test_the_wheel_holds_only_pixelplay_and_its_zoo_and_imports_from_outside_the_checkout(tmp_path):
    # A clean copy: a stale build/ in the checkout would pack the old top-level folders.
    source = tmp_path / "src"
    for name in _tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("pixelplay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"pixelplay"}, tops
    for module in ("pixelplay/train.py", "pixelplay/agents/networks.py", "pixelplay/envs/doom.py",
                   "pixelplay/eval/__main__.py"):
        assert module in names
    assert not any(name.startswith("pixelplay/tests/") or name.startswith("pixelplay/bench/") for name in names)
    for agent in ("doom-basic-dqn", "doom-basic-ppo"):  # the zoo ships as package data
        for file in ("agent.pt", "config.json", "README.md"):
            assert f"pixelplay/zoo/{agent}/{file}" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import pixelplay, pixelplay.train, pixelplay.eval.__main__; "
            "from pixelplay.agents.networks import NatureCNN; from pixelplay.agents import load_agent; "
            "from pixelplay.agents.checkpoint import resolve_checkpoint; load_agent('doom-basic-dqn'); "
            "print(pixelplay.__file__); print(resolve_checkpoint('doom-basic-ppo'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env={"PYTHONPATH": str(target), "PATH": ""},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    package_file, zoo_agent = result.stdout.strip().splitlines()[-2:]
    assert package_file.startswith(str(target))
    assert zoo_agent == str(target / "pixelplay" / "zoo" / "doom-basic-ppo" / "agent.pt")  # a zoo name, from anywhere


def test_no_module_is_loaded_under_two_names(tmp_path):
    """Run the training and eval entry points in one process; every module loaded from the
    checkout must be loaded as pixelplay.* (an `except PixelplayError` must never miss)."""
    script = f"""
import json, sys
from pathlib import Path
from pixelplay import train
from pixelplay.eval.__main__ import main as eval_main
run = {str(tmp_path / 'run')!r}
assert train.main(["--env", "doom-basic", "--num-envs", "1", "--total-steps", "32", "--num-steps", "16",
                   "--num-minibatches", "1", "--run-dir", run, "--no-track", "--no-progress"]) == 0
assert eval_main(["score", run, "--episodes", "1", "--num-envs", "1"]) == 0
assert eval_main(["score", "/no/such/checkpoint"]) == 2
root = Path({str(ROOT)!r})
bad = sorted(name for name, module in list(sys.modules.items())
             if str(getattr(module, "__file__", "") or "").startswith(str(root) + "/")
             and not name.startswith("pixelplay") and name not in ("__main__", "__mp_main__"))
print(json.dumps(bad))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_console_scripts_point_into_the_package_and_run_from_anywhere(tmp_path):
    from pixelplay import train
    from pixelplay.eval import __main__ as eval_main

    scripts = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.name.startswith("pixelplay-")}
    assert scripts["pixelplay-train"].load() is train.main
    assert scripts["pixelplay-eval"].load() is eval_main.main
    for command in (["pixelplay-train", "--help"], ["pixelplay-eval", "--help"],
                    [sys.executable, "-m", "pixelplay.eval", "--help"], [sys.executable, str(ROOT / "train.py"), "--help"]):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr)

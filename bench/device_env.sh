# Sourced by bench/gpu.sh and bench/gpu_train.sh (bash): the Python that runs the benches, set up
# on a machine where pixelplay may not be installed; then `require_modules NAME...` checks imports.
#   PYTHON     the interpreter (default: python3)
#   .whl/      wheels carried to a machine without a package index (bench/offline_wheels.sh makes
#              them): installed into /tmp/site
# The checkout is the package `pixelplay` (pyproject's package-dir), so a symlink named pixelplay
# in a temporary folder on PYTHONPATH makes it importable without an install.
PYTHON=${PYTHON:-python3}
# Only where they are needed: a machine that has the packages keeps its own (and .whl/ may hold
# wheels for another Python).
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null \
        && ! "$PYTHON" -c "import gymnasium, ale_py, stable_baselines3" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .whl/envpool_assets ] && ! "$PYTHON" -c "import envpool_assets" 2>/dev/null; then  # offline_wheels.sh's slim copy
    export ENVPOOL_ASSETS_PATH="$PWD/.whl/envpool_assets"
fi
if ! "$PYTHON" -c "import pixelplay" 2>/dev/null; then
    _pixelplay_link=$(mktemp -d)
    ln -s "$PWD" "$_pixelplay_link/pixelplay"
    export PYTHONPATH="$_pixelplay_link${PYTHONPATH:+:$PYTHONPATH}"
fi
# require_modules NAME...: exit with one clear line when the interpreter lacks any of these modules.
require_modules() {
    local missing
    missing=$("$PYTHON" -c 'import importlib.util, sys; print(" ".join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))' "$@")
    if [ -n "$missing" ]; then
        echo "error: $PYTHON cannot import: $missing (pip install them, or carry their wheels in .whl/)" >&2
        exit 1
    fi
}

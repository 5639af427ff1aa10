#!/usr/bin/env bash
# Set up seg_tune: a .venv at the repository root with torch, the package and its dev tools.
# Idempotent and non-interactive (safe in CI and on cluster login nodes).
#   ./setup.sh            CPU torch unless `nvidia-smi` works (then pip picks the CUDA build)
#   TORCH_SPEC=... ./setup.sh   force a torch requirement, e.g. TORCH_SPEC="torch==2.13.0"
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup.sh: $PYTHON is $("$PYTHON" --version 2>&1); seg_tune needs Python >= 3.10 (set PYTHON=...)" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY="$ROOT/.venv/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

# torch first: the CPU wheel (2.13.0 lies on local disk on our build machines) unless a GPU is present,
# where an unpinned torch resolves to the CUDA build. The rest is installed with torch pinned.
if [ -z "${TORCH_SPEC:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        TORCH_SPEC="torch"
    else
        TORCH_SPEC="torch==2.13.0"
    fi
fi
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "setup.sh: installing $TORCH_SPEC"
    "${PIP[@]}" "$TORCH_SPEC"
fi
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

echo "setup.sh: installing seg_tune[dev] (torch pinned to $TORCH_VERSION)"
"${PIP[@]}" -c "$CONSTRAINTS" -e ".[dev]"

# Credentials: only when given, never prompted for. Keys come from the environment or ./.env.
if [ -f .env ]; then
    set -a
    # shellcheck disable=SC1091
    . ./.env
    set +a
fi
if [ -n "${WANDB_API_KEY:-}" ]; then
    "$ROOT/.venv/bin/wandb" login --relogin "$WANDB_API_KEY" >/dev/null 2>&1 \
        && echo "setup.sh: wandb: logged in" || echo "setup.sh: wandb login failed (runs will be offline)" >&2
else
    echo "setup.sh: wandb: no WANDB_API_KEY, runs are logged offline (sync later with 'wandb sync')"
fi
HF_KEY=${HF_TOKEN:-${HUGGING_FACE_HUB_TOKEN:-}}
if [ -n "$HF_KEY" ]; then
    "$PY" - <<PYEOF || echo "setup.sh: Hugging Face hub login failed (hub push disabled)" >&2
import os
from huggingface_hub import login
login(token=os.environ.get("HF_TOKEN") or os.environ["HUGGING_FACE_HUB_TOKEN"], add_to_git_credential=False)
PYEOF
fi

# The pre-commit hook runs ruff from the venv (a local hook: nothing is downloaded from GitHub).
if [ -d .git ] && [ -x .venv/bin/pre-commit ]; then
    .venv/bin/pre-commit install >/dev/null && echo "setup.sh: pre-commit hook installed"
fi
echo "setup.sh: done. Activate with: source .venv/bin/activate"

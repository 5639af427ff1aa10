#!/usr/bin/env bash
# Set up seg_tune: a .venv at the repository root with torch, the package and its dev tools.
# Idempotent and non-interactive (safe in CI and on cluster login nodes).
#   ./setup.sh            the exact versions in requirements.lock (the ones the tests passed with);
#                         CPU torch unless `nvidia-smi` works (then pip picks the CUDA build)
#   SEG_TUNE_RESOLVE=1 ./setup.sh   (or ./setup.sh --upgrade) re-resolve to the newest versions
#                         pyproject.toml allows, install them and rewrite requirements.lock
#   TORCH_SPEC=... ./setup.sh   force a torch requirement, e.g. TORCH_SPEC="torch==2.13.0"
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
LOCK=requirements.lock
UV_SPEC="uv==0.13.9"   # the installer (into the venv); falls back to pip if it cannot be had
RESOLVE=${SEG_TUNE_RESOLVE:-0}
for arg in "$@"; do
    case "$arg" in
        --upgrade) RESOLVE=1 ;;
        *) echo "setup.sh: unknown argument '$arg' (only --upgrade)" >&2; exit 2 ;;
    esac
done
[ "$RESOLVE" = 0 ] || [ "$RESOLVE" = 1 ] || { echo "setup.sh: SEG_TUNE_RESOLVE must be 0 or 1" >&2; exit 2; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup.sh: $PYTHON is $("$PYTHON" --version 2>&1); seg_tune needs Python >= 3.10 (set PYTHON=...)" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY="$ROOT/.venv/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

# torch first, with pip (the CPU wheel, 2.13.0, lies on local disk on our build machines and only
# pip looks there) unless a GPU is present, where an unpinned torch resolves to the CUDA build.
# torch (and its CUDA packages) are not in the lock; the rest is installed with torch pinned.
if [ -z "${TORCH_SPEC:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        TORCH_SPEC="torch"
    else
        TORCH_SPEC="torch==2.13.0"
    fi
fi
# The installed torch's version, from its metadata (importing torch takes seconds).
torch_version() { "$PY" -c 'import importlib.metadata as m; print(m.version("torch").split("+")[0])' 2>/dev/null; }
TORCH_VERSION=$(torch_version || true)
if [ -z "$TORCH_VERSION" ]; then
    echo "setup.sh: installing $TORCH_SPEC"
    "${PIP[@]}" "$TORCH_SPEC"
    TORCH_VERSION=$(torch_version)
fi
CONSTRAINTS=.venv/torch-constraint.txt   # a stable name: uv writes it into the lock's "via" notes
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

# uv installs the locked set in seconds (pip: about a minute); pip is the fallback.
UV=""
if [ -x .venv/bin/uv ] || "${PIP[@]}" "$UV_SPEC" >/dev/null 2>&1; then
    UV="$ROOT/.venv/bin/uv"
else
    echo "setup.sh: $UV_SPEC could not be installed; using pip" >&2
fi
PY_MINOR=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

if [ "$RESOLVE" = 1 ]; then
    [ -n "$UV" ] || { echo "setup.sh: re-resolving needs uv ($UV_SPEC)" >&2; exit 1; }
    echo "setup.sh: re-resolving seg_tune[dev] to the newest allowed versions (torch pinned to $TORCH_VERSION); rewriting $LOCK"
    NEW_LOCK=$(mktemp "$ROOT/.lock.XXXXXX")
    trap 'rm -f "$NEW_LOCK" "$NEW_LOCK.out"' EXIT
    "$UV" pip compile -q --python "$PY" --upgrade --no-header --no-emit-package torch \
        pyproject.toml --extra dev -c "$CONSTRAINTS" -o "$NEW_LOCK.out"
    {
        echo "# requirements.lock: the exact versions seg_tune's tests passed with, for CPython $PY_MINOR on $(uname -s) $(uname -m)."
        echo "# ./setup.sh installs exactly these (with uv). torch and its CUDA packages (nvidia-*, cuda-*, triton)"
        echo "# are left out on purpose: setup.sh chooses torch (the CPU wheel, or the CUDA build where nvidia-smi works)."
        echo "# Made by setup.sh: uv pip compile pyproject.toml --extra dev -c <torch==installed> --no-emit-package torch"
        echo "# (then the CUDA packages dropped), with torch $TORCH_VERSION."
        echo "# Regenerate (newest versions pyproject.toml allows): SEG_TUNE_RESOLVE=1 ./setup.sh  (or ./setup.sh --upgrade),"
        echo "# then run the tests and commit this file with the change."
        echo "# python: $PY_MINOR"
        awk '/^#/ { skip = 0 } /^[A-Za-z0-9]/ { skip = ($0 ~ /^(nvidia-|cuda-|triton==)/) } !skip' "$NEW_LOCK.out"
    } >"$NEW_LOCK"
    mv "$NEW_LOCK" "$LOCK"
fi

LOCK_MINOR=$(sed -n 's/^# python: *//p' "$LOCK" 2>/dev/null | head -n1 || true)
USE_LOCK=0
if [ ! -f "$LOCK" ]; then
    echo "setup.sh: no $LOCK: installing the newest allowed versions (SEG_TUNE_RESOLVE=1 ./setup.sh writes one)" >&2
elif [ "$LOCK_MINOR" != "$PY_MINOR" ]; then
    echo "setup.sh: $LOCK is for Python $LOCK_MINOR, this is $PY_MINOR: installing the newest allowed versions instead (the lock is left as it is)" >&2
else
    USE_LOCK=1
fi
LOCK_NOTE=""; [ "$USE_LOCK" = 0 ] || LOCK_NOTE=" from $LOCK"
# seg_tune itself (editable) is rebuilt only when pyproject.toml, the lock or torch changed since the
# last install here (a rebuild costs seconds); the locked packages are checked every time.
STAMP=.venv/seg_tune-setup.stamp
STATE=$(cat pyproject.toml "$CONSTRAINTS" $([ "$USE_LOCK" = 0 ] || echo "$LOCK") | sha256sum | cut -c1-64)
EDITABLE=1
if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$STATE" ] && "$PY" -I - "$ROOT" <<'PYEOF'
import importlib.metadata as md, json, os, sys
from urllib.parse import unquote, urlparse
try:
    info = json.loads(md.distribution("seg_tune").read_text("direct_url.json") or "{}")
except (md.PackageNotFoundError, ValueError):
    sys.exit(1)
here = os.path.realpath(unquote(urlparse(info.get("url", "")).path)) == os.path.realpath(sys.argv[1])
sys.exit(0 if here and info.get("dir_info", {}).get("editable") else 1)
PYEOF
then
    EDITABLE=0
fi
rm -f "$STAMP"
if [ -n "$UV" ]; then
    LOCK_ARGS=(); [ "$USE_LOCK" = 0 ] || LOCK_ARGS=(-r "$LOCK")
    if [ "$EDITABLE" = 0 ] && [ "$USE_LOCK" = 1 ]; then
        echo "setup.sh: checking the packages in $LOCK with uv (seg_tune[dev] is installed and up to date)"
        "$UV" pip install -q --python "$PY" "${LOCK_ARGS[@]}" -c "$CONSTRAINTS"
    else
        echo "setup.sh: installing seg_tune[dev]$LOCK_NOTE with uv (torch pinned to $TORCH_VERSION)"
        "$UV" pip install -q --python "$PY" "${LOCK_ARGS[@]}" -c "$CONSTRAINTS" -e ".[dev]"
        # A dependency that pyproject.toml gained after the lock was written is installed unpinned: say so.
        [ "$USE_LOCK" = 0 ] || "$UV" pip freeze -q --python "$PY" --exclude-editable | "$PY" -I -c '
import re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {norm(line.split("==")[0]) for line in open(sys.argv[1]) if line[:1].isalnum()}
own = re.compile(r"(torch|nvidia-.*|cuda-.*|triton|uv|pip)$")  # torch and its CUDA packages, the tools
extra = [line.strip() for line in sys.stdin if "==" in line
         and norm(line.split("==")[0]) not in locked and not own.match(norm(line.split("==")[0]))]
if extra:
    print("setup.sh: installed but not pinned by %s (pin them: SEG_TUNE_RESOLVE=1 ./setup.sh): %s"
          % (sys.argv[1], " ".join(extra)))' "$LOCK"
    fi
    "$UV" pip check -q --python "$PY" || {
        echo "setup.sh: the installed packages do not fit together; if pyproject.toml's dependencies changed, run SEG_TUNE_RESOLVE=1 ./setup.sh" >&2
        exit 1
    }
else
    # pip: the lock as constraints (the same versions for the same pyproject.toml)
    LOCK_ARGS=(); [ "$USE_LOCK" = 0 ] || LOCK_ARGS=(-c "$LOCK")
    echo "setup.sh: installing seg_tune[dev]$LOCK_NOTE with pip (torch pinned to $TORCH_VERSION)"
    "${PIP[@]}" "${LOCK_ARGS[@]}" -c "$CONSTRAINTS" -e ".[dev]"
fi
echo "$STATE" >"$STAMP"

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

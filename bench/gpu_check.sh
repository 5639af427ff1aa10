#!/usr/bin/env bash
# bench/gpu_check.py on the device machine (Python 3.12 with CUDA torch, no network): unpack the
# packages bench/gpu_deps.sh packed, say what is there, then run the check into $OUT.
#   device run, carry [".gpu_site"]:  bash bench/gpu_check.sh
set -uo pipefail
out=${OUT:-/tmp/gpu_check_out}
mkdir -p "$out" /tmp/site
tar -xJf .gpu_site/site312.tar.xz -C /tmp/site || exit 1
for whl in .gpu_site/*.whl; do [ -e "$whl" ] && python3 -m zipfile -e "$whl" /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
python3 - <<'PY' || exit 1
import optuna, pydantic, ray, torch, transformers, wandb
import seg_tune.run
from ray._private.accelerators import NvidiaGPUAcceleratorManager as nv
print(f"python ok: torch {torch.__version__} cuda {torch.cuda.is_available()}, ray {ray.__version__}, "
      f"transformers {transformers.__version__}, optuna {optuna.__version__}, wandb {wandb.__version__}, "
      f"pydantic {pydantic.__version__}; Ray sees {nv.get_current_node_num_accelerators()} GPU(s)")
PY
timeout "${GPU_CHECK_TIMEOUT:-480}" python3 bench/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/log.txt"

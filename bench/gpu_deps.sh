#!/usr/bin/env bash
# Pack the Python packages that the device machine (Python 3.12, torch + CUDA, no network)
# lacks for bench/gpu_check.py into .gpu_site/site312.tar.xz (under the 64 MiB a call carries).
#   bash bench/gpu_deps.sh            # here, with pip access to PyPI
# On the device:  tar -xJf .gpu_site/site312.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
# Ray's Java jar, RLlib, Serve, LLM and the dashboard's source maps are left out (unused here).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=$(mktemp -d) site=$(mktemp -d)
trap 'rm -rf "$wheels" "$site"' EXIT
.venv/bin/pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 --platform any -d "$wheels" \
    "ray[tune,train,default]==2.60.0" optuna==5.0.0 wandb==0.31.0 pydantic==2.14.4 python-dotenv
# Already on the device image (its package list, /work/.library/device/KINDS.md), or unused.
present=" aiohappyeyeballs aiohttp aiosignal anyio attrs certifi charset_normalizer click filelock
 frozenlist fsspec grpcio h11 hf_xet httpcore httpx idna markupsafe msgpack multidict numpy packaging
 pandas prometheus_client propcache protobuf pyarrow python_dateutil pyyaml requests six tqdm
 urllib3 wrapt xxhash yarl huggingface_hub virtualenv distlib python_discovery
 py_spy cryptography cffi pycparser cwevals httpx2 httpcore2 truststore distro "
for whl in "$wheels"/*.whl; do
    name=$(basename "$whl" | cut -d- -f1 | tr '[:upper:]' '[:lower:]')
    [[ "$present" == *" $name "* ]] || unzip -q -o "$whl" -d "$site"
done
rm -rf "$site"/ray/{jars,rllib,serve,llm} "$site"/ray/dashboard/client/build/static/js/*.map
find "$site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p .gpu_site
grep -qx '/.gpu_site/' .git/info/exclude || echo /.gpu_site/ >>.git/info/exclude
tar -cJf .gpu_site/site312.tar.xz -C "$site" .
ls -l .gpu_site/site312.tar.xz

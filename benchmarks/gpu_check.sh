#!/usr/bin/env bash
# The GPU check (BENCHMARKS.md, "GPU check"): training and sampling speed against the original's way, peak GPU
# memory and a 2-GPU DDP start, as one table on stdout, in 8 minutes or less. Options: python benchmarks/gpu_check.py -h
#     bash benchmarks/gpu_check.sh [--json gpu_check.json]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"

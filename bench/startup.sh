#!/usr/bin/env bash
# Start-up of `ikd translate` next to `python -c "import torch"`: medians of N interleaved runs.
#   bash bench/startup.sh CKPT [N]      (N defaults to 7; run from the repository root)
# For the import breakdown: echo 'a sentence' | python -X importtime -m ikd.cli translate -c CKPT 2> imports.txt
set -euo pipefail
ckpt=${1:?usage: bash bench/startup.sh CKPT [N]}
n=${2:-7}
py=${PYTHON:-python}
seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
torch_times=(); ikd_times=()
for _ in $(seq "$n"); do
  torch_times+=("$(seconds "$py" -c "import torch")")
  ikd_times+=("$(seconds bash -c "echo 'A man rides a horse.' | $py -m ikd.cli translate -c '$ckpt'")")
done
t=$(median "${torch_times[@]}"); i=$(median "${ikd_times[@]}")
echo "median of $n: import torch ${t} s, ikd translate ${i} s, ratio $(echo "scale=2; $i / $t" | bc)"

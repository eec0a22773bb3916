#!/usr/bin/env bash
# Rebuilds the shipped chat-world model from nothing: the embedded task's data (seed 1), its tokenizer,
# pretraining (2 epochs, about 2.5 minutes on 2 cores), SFT (6 epochs, about 1.5 minutes). Writes
# tokenizer.bin, pretrain.bin and sft.bin here; the data, training states and metrics go to WORK
# (default: a temporary directory, printed). RLHF (an rlhf binary, default: the release build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
R="${RLHF:-$here/../../.build/release/rlhf}"
W="${WORK:-$(mktemp -d)}"
echo "work directory: $W"
"$R" task generate --out "$W/data" --seed 1
"$R" tokenizer train --corpus "$W/data/corpus.txt" --vocab-size 1024 --out "$W/tokenizer.bin"
"$R" train pretrain --corpus "$W/data/corpus.txt" --tokenizer "$W/tokenizer.bin" \
    --config dim=128,hidden_dim=384,n_layers=4,n_heads=4,n_kv_heads=2,seq_len=256 \
    --out "$W/pretrain.bin" --epochs 2 --batch-size 32 --lr 2e-3 --seed 1 --threads 2
"$R" train sft --data "$W/data/sft.jsonl" --init "$W/pretrain.bin" --out "$W/sft.bin" \
    --epochs 6 --batch-size 16 --lr 5e-4 --seed 1 --threads 2
cp "$W/tokenizer.bin" "$W/pretrain.bin" "$W/sft.bin" "$here/"
"$R" eval --checkpoint "$here/sft.bin" --threads 2

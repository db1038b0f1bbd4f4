#!/usr/bin/env bash
# CACMI on ActivityNet Captions, end to end: CLIP features -> memory bank -> vocabulary -> training ->
# evaluation on val_1 + val_2 -> model card (-> the Hub).
#
#   VIDEOS=/data/anet/videos DATA=/data/anet/captions bash examples/reproduce_activitynet.sh
#
# VIDEOS  the ActivityNet videos (any container PyAV reads; file name = video id, e.g. v_QOlSCBRmfWY.mp4)
# DATA    train_modified.json val_1.json val_2.json para_val_1.json para_val_2.json (PDVC's annotation files)
# WORK    output folder (default runs/activitynet): features, memory bank, vocabulary, model, scores
# HUB_ID  optional: upload the model folder (with its card) to this Hub repo, e.g. me/cacmi-activitynet
# DRY_RUN=1 prints the commands instead of running them.
#
# Needs a GPU (training is ~10k videos x 30 epochs), Java (METEOR, PTB tokenizer) and a network connection
# the first time (OpenAI's CLIP ViT-L/14 weights). Every step skips work already done, so a rerun resumes.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VIDEOS:?set VIDEOS to the folder of ActivityNet videos}"
: "${DATA:?set DATA to the folder with train_modified.json, val_1.json, val_2.json, para_val_*.json}"
WORK=${WORK:-runs/activitynet}
MODEL=$WORK/cacmi-activitynet
CLIP=$WORK/clip-vit-l-14

run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

if [ "${DRY_RUN:-0}" != 1 ]; then
    for f in train_modified.json val_1.json val_2.json para_val_1.json para_val_2.json; do
        [ -f "$DATA/$f" ] || { echo "missing $DATA/$f" >&2; exit 1; }
    done
    command -v java >/dev/null || { echo "Java is needed for METEOR: apt-get install default-jre-headless" >&2; exit 1; }
fi

# 1. OpenAI's CLIP ViT-L/14 saved once in open_clip's local-dir format: the same weights embed frames,
#    captions (memory bank) and, inside the saved model, the frames of new videos.
[ -f "$CLIP/open_clip_config.json" ] || run python -c "from cacmi_hf.open_clip_tower import load_open_clip, save_open_clip_local_dir; m, s = load_open_clip('ViT-L-14', 'openai', allow_download=True); save_open_clip_local_dir(m, s, '$CLIP')"

# 2. frame features, 1 frame per second (finished videos are skipped on a rerun)
run cacmi extract-features "$VIDEOS" --out "$WORK/features" --clip "$CLIP" --fps 1

# 3. text memory bank: CLIP text embeddings of the 37,421 training captions
[ -f "$WORK/memory/memory_bank.safetensors" ] || run cacmi build-memory "$DATA/train_modified.json" --out "$WORK/memory" --clip "$CLIP"

# 4. caption vocabulary: words seen at least twice in the training captions
[ -f "$WORK/vocab/tokenizer.json" ] || run cacmi build-vocab "$DATA/train_modified.json" --out "$WORK/vocab"

# 5. training (preset activitynet: the paper's sizes and the CM2 recipe; checkpoint chosen on 500 videos held out
#    of train), then the kept model captions val_1 + val_2 -> $MODEL/predictions_val_1_val_2.json.
#    Videos no longer on YouTube have no features: they are left out here and scored 0 by the evaluation.
[ -f "$MODEL/predictions_val_1_val_2.json" ] || run accelerate launch examples/train.py --preset activitynet \
    --annotations "$DATA/train_modified.json" "$DATA/val_1.json" "$DATA/val_2.json" \
    --features "$WORK/features" --memory_bank "$WORK/memory" --tokenizer "$WORK/vocab" \
    --clip "$CLIP" --missing_features skip --output_dir "$MODEL"

# 6. evaluation: densevid_eval semantics (METEOR 1.5, PTB tokenizer), SODA_c, paragraph scores
run cacmi evaluate "$MODEL/predictions_val_1_val_2.json" --references "$DATA/val_1.json" "$DATA/val_2.json" \
    --paragraph-references "$DATA/para_val_1.json" "$DATA/para_val_2.json" --output "$WORK/scores.json"

# 7. the model card, from those scores, as the model folder's README
run cacmi card --eval "$WORK/scores.json" --preset activitynet --model-id "${HUB_ID:-$MODEL}" --out "$MODEL/README.md"

# 8. optional: publish
if [ -n "${HUB_ID:-}" ]; then
    run hf upload "$HUB_ID" "$MODEL" . --exclude "checkpoint-*/*"
fi

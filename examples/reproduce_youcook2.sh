#!/usr/bin/env bash
# CACMI on YouCook2, end to end: CLIP features -> memory bank -> vocabulary -> training ->
# evaluation on val_1 + val_2 -> model card (-> the Hub).
#
#   VIDEOS=/data/yc2/videos DATA=/data/yc2/captions bash examples/reproduce_youcook2.sh
#
# VIDEOS  the YouCook2 videos (any container PyAV reads; file name = video id as in the annotations, e.g. v_GLd3aX16zBg.mp4)
# DATA    yc2_train.json yc2_val.json para_yc2_val.json (PDVC's annotation files)
# WORK    output folder (default runs/youcook2): features, memory bank, vocabulary, model, scores
# HUB_ID  optional: upload the model folder (with its card) to this Hub repo, e.g. me/cacmi-youcook2
# DRY_RUN=1 prints the commands instead of running them.
#
# Needs a GPU (training is 1,333 videos x 30 epochs at 200 frames), Java (METEOR, PTB tokenizer) and a network connection
# the first time (OpenAI's CLIP ViT-L/14 weights). Every step skips work already done, so a rerun resumes.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VIDEOS:?set VIDEOS to the folder of YouCook2 videos}"
: "${DATA:?set DATA to the folder with yc2_train.json, yc2_val.json, para_yc2_val.json}"
WORK=${WORK:-runs/youcook2}
MODEL=$WORK/cacmi-youcook2
CLIP=$WORK/clip-vit-l-14

run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

if [ "${DRY_RUN:-0}" != 1 ]; then
    for f in yc2_train.json yc2_val.json para_yc2_val.json; do
        [ -f "$DATA/$f" ] || { echo "missing $DATA/$f" >&2; exit 1; }
    done
    command -v java >/dev/null || { echo "Java is needed for METEOR: apt-get install default-jre-headless" >&2; exit 1; }
fi

# 1. OpenAI's CLIP ViT-L/14 saved once in open_clip's local-dir format: the same weights embed frames,
#    captions (memory bank) and, inside the saved model, the frames of new videos.
[ -f "$CLIP/open_clip_config.json" ] || run python -c "from cacmi_hf.open_clip_tower import load_open_clip, save_open_clip_local_dir; m, s = load_open_clip('ViT-L-14', 'openai', allow_download=True); save_open_clip_local_dir(m, s, '$CLIP')"

# 2. frame features, 1 frame per second (finished videos are skipped on a rerun)
run cacmi extract-features "$VIDEOS" --out "$WORK/features" --clip "$CLIP" --fps 1

# 3. text memory bank: CLIP text embeddings of the 10,337 training captions
[ -f "$WORK/memory/memory_bank.safetensors" ] || run cacmi build-memory "$DATA/yc2_train.json" --out "$WORK/memory" --clip "$CLIP"

# 4. caption vocabulary: words seen at least twice in the training captions
[ -f "$WORK/vocab/tokenizer.json" ] || run cacmi build-vocab "$DATA/yc2_train.json" --out "$WORK/vocab"

# 5. training (preset youcook2: the paper's sizes and the CM2 recipe; checkpoint chosen on 100 videos held out
#    of train), then the kept model captions the validation split -> $MODEL/predictions_validation.json.
#    Videos no longer on YouTube have no features: they are left out here and scored 0 by the evaluation.
[ -f "$MODEL/predictions_validation.json" ] || run accelerate launch examples/train.py --preset youcook2 \
    --annotations "$DATA/yc2_train.json" "$DATA/yc2_val.json" \
    --features "$WORK/features" --memory_bank "$WORK/memory" --tokenizer "$WORK/vocab" \
    --clip "$CLIP" --missing_features skip --output_dir "$MODEL"

# 6. evaluation: densevid_eval semantics (METEOR 1.5, PTB tokenizer), SODA_c, paragraph scores
run cacmi evaluate "$MODEL/predictions_validation.json" --references "$DATA/yc2_val.json" \
    --paragraph-references "$DATA/para_yc2_val.json" --output "$WORK/scores.json"

# 7. the model card, from those scores, as the model folder's README
run cacmi card --eval "$WORK/scores.json" --preset youcook2 --model-id "${HUB_ID:-$MODEL}" --out "$MODEL/README.md"

# 8. optional: publish
if [ -n "${HUB_ID:-}" ]; then
    run hf upload "$HUB_ID" "$MODEL" . --exclude "checkpoint-*/*"
fi

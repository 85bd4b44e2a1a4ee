#!/usr/bin/env bash
# Reference CPU benchmark: FLUX sampling-step time in stable-diffusion.cpp (sd.cpp).
#
# Builds sd.cpp at a pinned commit in two ggml CPU flavours:
#   default    ggml CPU backend as sd.cpp configures it (GGML_LLAMAFILE is OFF by default in ggml)
#   llamafile  the same with -DGGML_LLAMAFILE=ON (tinyBLAS sgemm kernels for f32/f16/q8 matmuls)
# and times one txt2img generation with our "medium" FLUX transformer, printing the per-step
# sampling times and a last line `median_ms <ms>` that a driver can parse.
#
# Usage:
#   bench_sdcpp.sh sources                     only fetch/check out the pinned sources
#   bench_sdcpp.sh build  BUILD_DIR            fetch sources (if needed) and build both variants
#   bench_sdcpp.sh models                      write the small random companion files (T5, TAE)
#   bench_sdcpp.sh run    BUILD_DIR VARIANT    one timed generation; VARIANT = default | llamafile
#   bench_sdcpp.sh all    BUILD_DIR            build + models + run both variants
#
# Environment (defaults in brackets):
#   SDCPP_SRC      sd.cpp work tree, created if missing           [target/sdcpp/src]
#   SDCPP_REPO     where to clone sd.cpp from                      [https://github.com/leejet/stable-diffusion.cpp]
#   GGML_REPO      where to clone ggml from                        [https://github.com/ggml-org/ggml]
#   SDCPP_MODELS   directory for the generated companion files     [target/sdcpp/models]
#   FLUX_MODEL     FLUX transformer (BFL key layout, f32)          [target/medium.safetensors]
#                  (bench_torch.py --size medium --save-bfl target/medium.safetensors)
#   PYTHON         python with torch, safetensors, diffusers       [python3]
#   STEPS [3]  THREADS [2]  WIDTH [512]  HEIGHT [512]  SEED [42]  TEXT_WORDS [300]
#   JOBS [2] (build parallelism)   NICE [] (nice level for build and run; empty = not niced)
#   SDCPP_LOG      where `run` keeps the full sd-cli output        [BUILD_DIR/run-VARIANT.log]
set -euo pipefail

SD_COMMIT=97d2990807fe6d558e395f8764198d7c7e7b411c
GGML_COMMIT=8e800cef2948046cc47f9db6090491c6128ca42c

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SDCPP_SRC=${SDCPP_SRC:-$ROOT/target/sdcpp/src}
SDCPP_REPO=${SDCPP_REPO:-https://github.com/leejet/stable-diffusion.cpp}
GGML_REPO=${GGML_REPO:-https://github.com/ggml-org/ggml}
SDCPP_MODELS=${SDCPP_MODELS:-$ROOT/target/sdcpp/models}
FLUX_MODEL=${FLUX_MODEL:-$ROOT/target/medium.safetensors}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-3}
THREADS=${THREADS:-2}
WIDTH=${WIDTH:-512}
HEIGHT=${HEIGHT:-512}
SEED=${SEED:-42}
TEXT_WORDS=${TEXT_WORDS:-300}
JOBS=${JOBS:-2}
NICE=${NICE-}

T5_FILE=$SDCPP_MODELS/t5-1layer-d4096.safetensors
TAE_FILE=$SDCPP_MODELS/tae-flux-random.safetensors

log() { echo "[bench_sdcpp] $*" >&2; }
die() { log "error: $*"; exit 1; }
niced() { if [[ -n $NICE ]]; then nice -n "$NICE" "$@"; else "$@"; fi; }

# ---------------------------------------------------------------- sources

checkout_at() { # repo_url dest commit
    local url=$1 dest=$2 commit=$3
    if [[ ! -e $dest/.git ]]; then
        rm -rf "$dest"
        log "cloning $url -> $dest"
        git clone --quiet --no-checkout "$url" "$dest"
    fi
    # (a --no-checkout clone already has HEAD at the commit but an empty work tree)
    if [[ $(git -C "$dest" rev-parse HEAD 2>/dev/null) != "$commit" || ! -f $dest/CMakeLists.txt ]]; then
        local err
        if ! err=$(git -C "$dest" checkout --quiet --force --detach "$commit" 2>&1); then
            log "warning: checkout of $commit in $dest is incomplete:" \
                "$(grep -c 'unable to read' <<<"$err") file(s) missing from the source repository"
        fi
    fi
    [[ $(git -C "$dest" rev-parse HEAD) == "$commit" ]] || die "$dest is not at $commit"
}

# Write bytes from stdin as a C array `static const unsigned char NAME[] = {...};`
c_array() {
    printf 'static const unsigned char %s[] = {\n' "$1"
    od -An -v -tx1 | tr -s ' \n' '  ' | sed -e 's/^ *//' -e 's/ *$//' -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'
    printf '\n};\n'
}

# Some mirrors lack the large embedded tokenizer tables. Only the T5 one is used on the FLUX
# path; replace missing ones with minimal stand-ins so the library still compiles. The T5
# stand-in is a tiny unigram vocabulary in which every lowercase letter, with and without the
# word-start marker, is one piece, so "a a a ..." tokenizes to one token per word just as the
# real T5 vocabulary does (the token count is what matters for timing, not the ids).
fill_missing_vocab() {
    local dir=$SDCPP_SRC/src/tokenizers/vocab f sym
    [[ -f $dir/vocab.cpp ]] || return 0
    local t5='{"pre_tokenizer":{"replacement":"\u2581","add_prefix_space":true},"model":{"unk_id":2,"vocab":[["<pad>",0.0],["</s>",0.0],["<unk>",0.0],["\u2581",-2.0]'
    local ch
    for ch in {a..z}; do t5+=",[\"$ch\",-3.0],[\"\\u2581$ch\",-2.5]"; done
    t5+=']}}'
    # header file -> array name, taken from vocab.cpp's includes and loaders
    local pairs="clip_merges.hpp:clip_merges_utf8_c_str t5.hpp:t5_tokenizer_json_str
        umt5.hpp:umt5_tokenizer_json_str qwen_merges.hpp:qwen2_merges_utf8_c_str
        mistral_merges.hpp:mistral_merges_utf8_c_str mistral_vocab.hpp:mistral_vocab_json_utf8_c_str
        gemma_merges.hpp:gemma_merges_utf8_c_str gemma_vocab.hpp:gemma_vocab_json_utf8_c_str
        gemma2_merges.hpp:gemma2_merges_utf8_c_str gemma2_vocab.hpp:gemma2_vocab_json_utf8_c_str
        gpt_oss_merges.hpp:gpt_oss_merges_utf8_c_str gpt_oss_vocab.hpp:gpt_oss_vocab_json_utf8_c_str"
    local p
    for p in $pairs; do
        f=${p%%:*}; sym=${p#*:}
        grep -q "\"$f\"" "$dir/vocab.cpp" || continue
        [[ -s $dir/$f ]] && continue
        log "warning: $f missing from the checkout, writing a stand-in"
        case $f in
            t5.hpp | umt5.hpp) printf '%s' "$t5" | c_array "$sym" >"$dir/$f" ;;
            *) printf '{}' | c_array "$sym" >"$dir/$f" ;;
        esac
    done
}

prepare_sources() {
    mkdir -p "$(dirname "$SDCPP_SRC")"
    checkout_at "$SDCPP_REPO" "$SDCPP_SRC" "$SD_COMMIT"
    local pinned
    pinned=$(git -C "$SDCPP_SRC" ls-tree HEAD ggml | awk '{print $3}')
    [[ $pinned == "$GGML_COMMIT" ]] || die "sd.cpp pins ggml $pinned, expected $GGML_COMMIT"
    if [[ ! -e $SDCPP_SRC/ggml/.git ]]; then rm -rf "$SDCPP_SRC/ggml"; fi
    checkout_at "$GGML_REPO" "$SDCPP_SRC/ggml" "$GGML_COMMIT"
    fill_missing_vocab
}

# ---------------------------------------------------------------- build

build_variant() { # build_dir variant
    local dir=$1/$2 llamafile
    case $2 in
        default) llamafile=OFF ;;
        llamafile) llamafile=ON ;;
        *) die "unknown variant $2" ;;
    esac
    # WebP/WebM need submodules we do not fetch; the server example is configured but not built.
    local opts=(-DCMAKE_BUILD_TYPE=Release -DSD_WEBP=OFF -DSD_WEBM=OFF -DSD_BUILD_SHARED_LIBS=OFF
                -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_LLAMAFILE=$llamafile -DGGML_CCACHE=OFF)
    log "configure $2: cmake ${opts[*]}"
    local t0=$SECONDS
    env -u SOURCE_DATE_EPOCH cmake -S "$SDCPP_SRC" -B "$dir" "${opts[@]}" >"$dir.configure.log" 2>&1 ||
        { tail -30 "$dir.configure.log" >&2; die "configure $2 failed"; }
    niced cmake --build "$dir" --target sd-cli -j "$JOBS" >"$dir.build.log" 2>&1 ||
        { tail -30 "$dir.build.log" >&2; die "build $2 failed"; }
    [[ -x $dir/bin/sd-cli ]] || die "no $dir/bin/sd-cli"
    log "built $2 in $((SECONDS - t0)) s: $dir/bin/sd-cli"
    local n_sgemm
    n_sgemm=$(nm -C "$dir/bin/sd-cli" | grep -c ' T llamafile_sgemm') || true
    if [[ $llamafile == ON ]]; then
        ((n_sgemm > 0)) || die "llamafile build has no llamafile_sgemm symbol"
        log "llamafile_sgemm is linked into $2"
    else
        ((n_sgemm == 0)) || die "default build unexpectedly contains llamafile_sgemm"
    fi
}

cmd_build() {
    local bdir=${1:?usage: build BUILD_DIR}
    mkdir -p "$bdir"
    bdir=$(cd "$bdir" && pwd)
    prepare_sources
    build_variant "$bdir" default
    build_variant "$bdir" llamafile
}

# ---------------------------------------------------------------- models

# sd.cpp's FLUX conditioner needs a T5 encoder file (clip_l may be left out: the pooled vector
# is then zeros) and a first-stage model. T5 depth/width/heads/vocab are read from the tensor
# shapes, so one layer with a 64-wide attention and FFN is enough, as long as model_dim is the
# 4096 the transformer's txt_in expects. The first stage is a randomly initialised tiny
# autoencoder (diffusers AutoencoderTiny layout, 16 latent channels) passed as --taesd, which
# is far cheaper to run than the full VAE. None of this is inside the timed sampling steps.
cmd_models() {
    mkdir -p "$SDCPP_MODELS"
    if [[ -s $T5_FILE && -s $TAE_FILE ]]; then
        log "companion files present in $SDCPP_MODELS"
        return 0
    fi
    niced "$PYTHON" - "$T5_FILE" "$TAE_FILE" <<'PY'
import sys
import torch
from safetensors.torch import save_file

t5_path, tae_path = sys.argv[1], sys.argv[2]
g = torch.Generator().manual_seed(0)

def rnd(*shape, dtype=torch.float32, std=0.02):
    return (torch.randn(*shape, generator=g) * std).to(dtype)

d_model, d_inner, d_ff, vocab = 4096, 64, 64, 32128
t5 = {
    "shared.weight": rnd(vocab, d_model, dtype=torch.float16, std=1.0),
    "encoder.final_layer_norm.weight": torch.ones(d_model),
}
pre = "encoder.block.0.layer."
for n in ("q", "k", "v"):
    t5[f"{pre}0.SelfAttention.{n}.weight"] = rnd(d_inner, d_model)
t5[f"{pre}0.SelfAttention.o.weight"] = rnd(d_model, d_inner)
t5[f"{pre}0.SelfAttention.relative_attention_bias.weight"] = rnd(32, d_inner // 64)
t5[f"{pre}0.layer_norm.weight"] = torch.ones(d_model)
t5[f"{pre}1.DenseReluDense.wi_0.weight"] = rnd(d_ff, d_model)
t5[f"{pre}1.DenseReluDense.wi_1.weight"] = rnd(d_ff, d_model)
t5[f"{pre}1.DenseReluDense.wo.weight"] = rnd(d_model, d_ff)
t5[f"{pre}1.layer_norm.weight"] = torch.ones(d_model)
save_file({k: v.contiguous() for k, v in t5.items()}, t5_path)

from diffusers import AutoencoderTiny
torch.manual_seed(0)
tae = AutoencoderTiny(latent_channels=16)
save_file({k: v.detach().float().contiguous() for k, v in tae.state_dict().items()}, tae_path)
print(f"wrote {t5_path} ({len(t5)} tensors) and {tae_path} ({len(tae.state_dict())} tensors)")
PY
}

# ---------------------------------------------------------------- run

# sd.cpp's FLUX conditioner pads T5 tokens in chunks of 256 (255 + EOS) and concatenates the
# chunks, so a prompt of 256..510 one-token words gives exactly 512 text tokens.
make_prompt() {
    local i out=""
    for ((i = 0; i < TEXT_WORDS; i++)); do out+="a "; done
    printf '%s' "${out% }"
}

cmd_run() {
    local bdir=${1:?usage: run BUILD_DIR VARIANT} variant=${2:?usage: run BUILD_DIR VARIANT}
    local bin=$bdir/$variant/bin/sd-cli
    [[ -x $bin ]] || die "no binary $bin (run: $0 build $bdir)"
    [[ -s $T5_FILE && -s $TAE_FILE ]] || die "companion files missing (run: $0 models)"
    [[ -s $FLUX_MODEL ]] || die "no FLUX model at $FLUX_MODEL"
    local out_log=${SDCPP_LOG:-$bdir/run-$variant.log}
    local args=(
        -M img_gen
        --diffusion-model "$FLUX_MODEL" --t5xxl "$T5_FILE" --taesd "$TAE_FILE"
        -p "$(make_prompt)"
        -W "$WIDTH" -H "$HEIGHT" --steps "$STEPS" --seed "$SEED"
        --sampling-method euler --cfg-scale 1 --guidance 3.5
        -t "$THREADS" --eager-load -v
        -o "$bdir/out-$variant.png"
    )
    log "run $variant: $bin (steps=$STEPS threads=$THREADS ${WIDTH}x$HEIGHT)"
    local rc=0
    niced "$bin" "${args[@]}" >"$out_log" 2>&1 || rc=$?
    if ((rc != 0)); then tail -30 "$out_log" >&2; die "sd-cli exited with $rc (log $out_log)"; fi
    # Progress lines are redrawn with '\r'; each reports the wall time of one sampling step as
    # "<s>s/it" (or "<n>it/s" when faster than one step per second).
    tr '\r' '\n' <"$out_log" | awk -v want="$STEPS" '
        match($0, /[0-9]+\/[0-9]+ - [0-9.]+(s\/it|it\/s)/) {
            s = substr($0, RSTART, RLENGTH)                  # "<step>/<total> - <value><unit>"
            step = s + 0; total = substr(s, index(s, "/") + 1) + 0
            v = substr(s, index(s, " - ") + 3) + 0
            ms = (s ~ /it\/s$/) ? 1000 / v : 1000 * v
            if (step >= 1 && !(step in seen)) { seen[step] = 1; t[++n] = ms
                printf "step %d/%d %.1f ms\n", step, total, ms }
        }
        /sampling completed, taking/ { print "sd.cpp:" substr($0, index($0, "sampling completed")) }
        END {
            if (n == 0) { print "no sampling steps found in log" > "/dev/stderr"; exit 1 }
            if (n != want) printf "warning: parsed %d steps, expected %d\n", n, want > "/dev/stderr"
            for (i = 2; i <= n; i++) { x = t[i]; for (j = i - 1; j >= 1 && t[j] > x; j--) t[j + 1] = t[j]; t[j + 1] = x }
            med = (n % 2) ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
            printf "median_ms %.1f\n", med
        }'
}

case ${1:-} in
    sources) prepare_sources ;;
    build) shift; cmd_build "$@" ;;
    models) shift; cmd_models "$@" ;;
    run) shift; cmd_run "$@" ;;
    all)
        shift
        b=${1:?usage: all BUILD_DIR}
        cmd_build "$b"; cmd_models
        b=$(cd "$b" && pwd)
        cmd_run "$b" default; cmd_run "$b" llamafile
        ;;
    *) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

"""Golden fixtures for flux-text: tiny T5 / CLIP text encoders and the two tokenizers.

Writes flux-text/tests/fixtures/:
  t5/                    tiny T5EncoderModel (gated-gelu), HF folder: config.json + model.safetensors (f32)
  t5_sharded/            the same weights in two shards + model.safetensors.index.json + config.json
  t5_bf16.safetensors    the same weights stored in bf16, one file, no config, ComfyUI-style (holds
                         both `shared.weight` and its duplicate `encoder.embed_tokens.weight`)
  t5_fp8_e4m3fn.safetensors  the same weights as ComfyUI's fp8 file: linear weights fp8 e4m3fn, rest f16
  t5_io.safetensors      ids [2, 150] (i64), hidden (f32 model), hidden_bf16 / hidden_fp8 (rounded
                         weights run in f32)
  t5_overflow.safetensors  a tiny T5 (f32 weights) whose feed-forward output exceeds f16's range
  t5_overflow_io.safetensors  its ids, hidden (f32 reference), ff_max (largest |FF output|)
  clip/                  tiny CLIPTextModel (legacy eos_token_id 2), HF folder (f32) as transformers 5
                         saves it (keys without the `text_model.` prefix)
  clip_l_bf16.safetensors  the same weights in bf16, one file, `text_model.*` keys as in the FLUX.1
                         repository and ComfyUI's clip_l, plus an extra `text_projection.weight`
  clip_io.safetensors    ids [2, 77], last_hidden_state, pooled (+ *_bf16 for the bf16 file)
  tokenizers/clip/vocab.json.gz, merges.txt.gz   CLIP's real BPE (from open_clip's
                         bpe_simple_vocab_16e6.txt.gz, built the way CLIP's SimpleTokenizer does)
  tokenizers/clip/tokenizer.json.gz   transformers' CLIPTokenizer on them, saved
  tokenizers/t5/tokenizer.json   a small sentencepiece unigram model (1000 pieces) converted by
                         transformers' T5Tokenizer
  tokenizers/expected.json  prompts and the ids transformers (and sentencepiece / open_clip) give

Run from the repository root: .venv/bin/python scripts/reference/gen_text.py
"""

import gzip
import io
import json
import os
import random
import shutil
import tempfile

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config,
                          T5EncoderModel, T5Tokenizer)

OUT = "flux-text/tests/fixtures"


def gz_write(path, text):
    # mtime=0 keeps the .gz byte-identical between runs
    with open(path, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9) as g:
            g.write(text.encode("utf-8"))


def state(model, dtype=torch.float32):
    return {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}


def write_config(folder, config):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)


# ---------------------------------------------------------------- T5
def t5_config(**kw):
    return T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                    is_encoder_decoder=False, use_cache=False, **kw)


def t5_model(seed, wo_scale=1.0):
    torch.manual_seed(seed)
    model = T5EncoderModel(t5_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "relative_attention_bias" in name or name == "shared.weight":
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
            if name.endswith("DenseReluDense.wo.weight"):
                p.mul_(wo_scale)
    return model


def t5_keys(model):
    """What save_pretrained stores: the tied `encoder.embed_tokens.weight` is dropped."""
    sd = state(model)
    sd.pop("encoder.embed_tokens.weight")
    return sd


def gen_t5():
    model = t5_model(0)
    torch.manual_seed(1)
    ids = torch.randint(0, 300, (2, 150))
    ids[1, 100:] = 0  # padding, as FLUX pads to 512 with id 0 and no mask
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state
    sd = t5_keys(model)

    folder = os.path.join(OUT, "t5")
    os.makedirs(folder, exist_ok=True)
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    write_config(folder, model.config)

    folder = os.path.join(OUT, "t5_sharded")
    os.makedirs(folder, exist_ok=True)
    keys = sorted(sd)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(v.numel() * 4 for v in sd.values())},
                   "weight_map": weight_map}, f, indent=2, sort_keys=True)
    write_config(folder, model.config)

    bf16 = state(model, torch.bfloat16)  # keeps the duplicate embed_tokens key
    save_file(bf16, os.path.join(OUT, "t5_bf16.safetensors"))
    rounded = t5_model(0)
    rounded.load_state_dict({k: v.float() for k, v in bf16.items()})
    with torch.no_grad():
        hidden_bf16 = rounded(input_ids=ids).last_hidden_state
    # ComfyUI's t5xxl_fp8_e4m3fn layout: linear weights in fp8 e4m3fn, the rest in f16.
    fp8 = {k: v.to(torch.float8_e4m3fn) if k.endswith(("q.weight", "k.weight", "v.weight",
                                                          "o.weight", "wi_0.weight", "wi_1.weight",
                                                          "wo.weight")) else v.to(torch.float16)
           for k, v in t5_keys(model).items()}
    assert sum(v.dtype == torch.float8_e4m3fn for v in fp8.values()) == 14
    save_file(fp8, os.path.join(OUT, "t5_fp8_e4m3fn.safetensors"))
    rounded = t5_model(0)
    rounded.load_state_dict({k: v.float() for k, v in fp8.items()}, strict=False)
    rounded.encoder.embed_tokens.weight = rounded.shared.weight
    with torch.no_grad():
        hidden_fp8 = rounded(input_ids=ids).last_hidden_state
    save_file({"ids": ids, "hidden": hidden, "hidden_bf16": hidden_bf16, "hidden_fp8": hidden_fp8},
              os.path.join(OUT, "t5_io.safetensors"))

    # Overflow case: `wo` scaled so the feed-forward output leaves f16's range.
    model = t5_model(2, wo_scale=8.0e4)
    torch.manual_seed(3)
    ids = torch.randint(0, 300, (1, 24))
    ff_max = 0.0

    def hook(_m, _i, out):
        nonlocal ff_max
        ff_max = max(ff_max, out.abs().max().item())

    handles = [b.layer[1].DenseReluDense.wo.register_forward_hook(hook) for b in model.encoder.block]
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state
    for h in handles:
        h.remove()
    assert ff_max > 65504 * 2, ff_max
    assert torch.isfinite(hidden).all()
    save_file(t5_keys(model), os.path.join(OUT, "t5_overflow.safetensors"))
    save_file({"ids": ids, "hidden": hidden, "ff_max": torch.tensor([ff_max])},
              os.path.join(OUT, "t5_overflow_io.safetensors"))
    print(f"t5 overflow: max |FF out| = {ff_max:.3g}")


# ---------------------------------------------------------------- CLIP
def clip_model(seed):
    config = CLIPTextConfig(vocab_size=1000, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32,
                            bos_token_id=0, eos_token_id=2, pad_token_id=1)
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embedding" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    return model


def gen_clip():
    model = clip_model(10)
    torch.manual_seed(11)
    bos, eos = 998, 999  # the two largest ids, as in CLIP's real vocabulary
    ids = torch.randint(1, 998, (2, 77))
    ids[:, 0] = bos
    for row, n in enumerate((9, 40)):
        ids[row, n:] = eos  # EOS then padding with EOS
    with torch.no_grad():
        out = model(input_ids=ids)
    sd = state(model)
    folder = os.path.join(OUT, "clip")
    os.makedirs(folder, exist_ok=True)
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    write_config(folder, model.config)

    # transformers 5 saves CLIPTextModel without the `text_model.` prefix (the folder above);
    # the FLUX.1 repository and ComfyUI's clip_l.safetensors keep it (and transformers loads both).
    bf16 = state(model, torch.bfloat16)
    rounded = clip_model(10)
    rounded.load_state_dict({k: v.float() for k, v in bf16.items()})
    bf16 = {"text_model." + k: v for k, v in bf16.items()}
    with torch.no_grad():
        out_bf16 = rounded(input_ids=ids)
    torch.manual_seed(12)
    bf16["text_projection.weight"] = torch.randn(32, 64).to(torch.bfloat16)
    save_file(bf16, os.path.join(OUT, "clip_l_bf16.safetensors"))
    save_file({"ids": ids, "last_hidden_state": out.last_hidden_state, "pooled": out.pooler_output,
               "last_hidden_state_bf16": out_bf16.last_hidden_state,
               "pooled_bf16": out_bf16.pooler_output},
              os.path.join(OUT, "clip_io.safetensors"))


# ---------------------------------------------------------------- tokenizers
LONG = " ".join(["a majestic red fox jumping over the lazy dog at sunset, highly detailed,"] * 60)
PROMPTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT, HELLO World MiXeD",
    "Crème brûlée à la façon de Noël — naïve café, São Paulo, Ærøskøbing, straße",
    "ﬁne ﬂour, ﬀ and œuvre; Æsir ĳssel",
    "🙂 a 👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs, ❤️",
    "東京の夜景、桜の花が咲く。漢字 中文 한국어 テスト",
    "it's the cat's toy, we'll see, they'd've, don’t, I'M HERE, rock 'n' roll",
    "3.14159, 1,000,000 and $9.99 — 50% off! 2024-06-01 12:30 #42 v1.2.3",
    "  lots   of\t\tspace \n\n new   lines  ",
    "<|endoftext|> hidden <|startoftext|> tokens<|endoftext|>",
    "T5 specials </s> <pad> <unk> inline",
    LONG,
    " ".join(["word"] * 80),
]

WORDS = ("a the of and to in photo cat dog red blue green fox jumping over lazy sunset highly "
         "detailed majestic portrait landscape city night light crème brûlée façon noël naïve café "
         "são paulo ærøskøbing straße œuvre æsir it's we'll don't they'd've rock roll family flag "
         "number price off more painting oil canvas watercolor style art artstation trending "
         "东京 夜景 桜 花 咲く 漢字 中文 한국어 テスト 写真 猫 犬 山 川 空 海 "
         "3.14 1,000 $9.99 50% 2024-06-01 12:30 v1.2.3 #42").split()


def clip_vocab():
    """CLIP's SimpleTokenizer vocabulary, rebuilt from open_clip's merges file."""
    import open_clip.tokenizer as oct
    path = oct.default_bpe()
    merges = gzip.open(path).read().decode("utf-8").split("\n")
    merges = merges[1: 49152 - 256 - 2 + 1]
    assert len(merges) == 48894
    b2u = oct.bytes_to_unicode()
    vocab = list(b2u.values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    return {v: i for i, v in enumerate(vocab)}, merges, oct.SimpleTokenizer(path)


def train_spm(folder):
    rng = random.Random(0)
    onsets = list("bcdfghjklmnprstvwz") + ["th", "st", "ch", "sh", "br", "tr", "ß", "ç", "ñ"]
    vowels = list("aeiouy") + list("éèêàâîïôöüûœæøå")
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 400)] + [chr(c) for c in range(0x3041, 0x3097)]
    hangul = [chr(c) for c in range(0xAC00, 0xAC00 + 100)]

    def word():
        r = rng.random()
        if r < 0.5:
            return rng.choice(WORDS)
        if r < 0.8:
            w = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
            return w.capitalize() if rng.random() < 0.2 else w
        if r < 0.95:
            return "".join(rng.choice(cjk) for _ in range(rng.randint(1, 4)))
        return "".join(rng.choice(hangul) for _ in range(rng.randint(1, 3)))

    lines = [" ".join(word() for _ in range(rng.randint(3, 15))) for _ in range(8000)]
    text = os.path.join(folder, "corpus.txt")
    with open(text, "w") as f:
        f.write("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=os.path.join(folder, "spiece"), vocab_size=1000,
        model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        num_threads=1, seed_sentencepiece_size=100000, shuffle_input_sentence=False,
        minloglevel=2)
    return os.path.join(folder, "spiece.model")


def gen_tokenizers():
    folder = os.path.join(OUT, "tokenizers")
    os.makedirs(os.path.join(folder, "clip"), exist_ok=True)
    os.makedirs(os.path.join(folder, "t5"), exist_ok=True)
    expected = {"prompts": PROMPTS, "clip": {}, "t5": {}}

    vocab, merges, simple = clip_vocab()
    tmp = tempfile.mkdtemp()
    vocab_json = json.dumps(vocab, ensure_ascii=False)
    merges_txt = "#version: 0.2\n" + "\n".join(merges) + "\n"
    with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
        f.write(vocab_json)
    with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
        f.write(merges_txt)
    gz_write(os.path.join(folder, "clip", "vocab.json.gz"), vocab_json)
    gz_write(os.path.join(folder, "clip", "merges.txt.gz"), merges_txt)
    clip = CLIPTokenizer(vocab=os.path.join(tmp, "vocab.json"), merges=os.path.join(tmp, "merges.txt"))
    clip = CLIPTokenizer.from_pretrained(tmp) if len(clip) != 49408 else clip
    assert len(clip) == 49408 and clip.eos_token_id == 49407 and clip.pad_token_id == 49407
    clip.save_pretrained(os.path.join(tmp, "saved"))
    with open(os.path.join(tmp, "saved", "tokenizer.json"), encoding="utf-8") as f:
        gz_write(os.path.join(folder, "clip", "tokenizer.json.gz"), f.read())
    for max_len in (77, 16):
        rows = []
        for p in PROMPTS:
            full = clip(p).input_ids
            ids = clip(p, padding="max_length", max_length=max_len, truncation=True).input_ids
            # open_clip's original tokenizer, for information (not every prompt agrees)
            orig = [49406] + simple.encode(p) + [49407]
            rows.append({"ids": ids, "truncated": len(full) > max_len, "unpadded": full,
                         "open_clip": orig})
        expected["clip"][str(max_len)] = rows
    shutil.rmtree(tmp)

    tmp = tempfile.mkdtemp()
    model = train_spm(tmp)
    sp = spm.SentencePieceProcessor(model_file=model)
    # from_pretrained on a folder holding only spiece.model runs transformers' converter
    t5 = T5Tokenizer.from_pretrained(tmp)
    saved = os.path.join(tmp, "saved")
    t5.save_pretrained(saved)
    with open(os.path.join(saved, "tokenizer.json")) as f:
        tok = json.load(f)
    with open(os.path.join(folder, "t5", "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False, sort_keys=True)
    t5 = T5Tokenizer.from_pretrained(saved)
    assert len(t5) == 1100 and t5.pad_token_id == 0 and t5.eos_token_id == 1
    for max_len in (512, 256, 16):
        rows = []
        for p in PROMPTS:
            full = t5(p).input_ids
            ids = t5(p, padding="max_length", max_length=max_len, truncation=True).input_ids
            rows.append({"ids": ids, "truncated": len(full) > max_len, "unpadded": full,
                         "sentencepiece": sp.encode(p) + [1]})
        expected["t5"][str(max_len)] = rows
    shutil.rmtree(tmp)
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False, indent=None, sort_keys=True)
        f.write("\n")
    for name, key in (("clip", "open_clip"), ("t5", "sentencepiece")):
        rows = expected[name][str(77 if name == "clip" else 512)]
        bad = [i for i, r in enumerate(rows) if r["unpadded"] != r[key]]
        print(f"{name}: transformers and {key} differ on prompts {bad}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    gen_t5()
    gen_clip()
    gen_tokenizers()

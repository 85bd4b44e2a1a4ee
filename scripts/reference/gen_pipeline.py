"""End-to-end golden fixtures for `flux::Pipeline`: tiny diffusers FluxPipelines, run in f32 on CPU.

Writes, under flux/tests/fixtures/:
  tiny_pipeline/          a FLUX.1-dev-style pipeline in diffusers' folder layout (save_pretrained)
  tiny_pipeline_schnell/  the same text encoders, tokenizers and VAE with a schnell-style transformer
                          (no guidance embedding) and FLUX.1-schnell's scheduler config
  tiny_pipeline_runs/     <run>.safetensors (inputs, intermediates, outputs) + <run>.json (call)

Every component is built locally from fixed seeds (nothing comes from the hub). The runs load the
pipelines back from the saved folders, so the fixtures hold exactly what the files reproduce.

Run from the repository root:  python scripts/reference/gen_pipeline.py
"""

import gzip
import io
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import sentencepiece as spm
import torch
import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from open_clip.tokenizer import bytes_to_unicode, default_bpe
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "flux" / "tests" / "fixtures"
DEV_DIR = FIXTURES / "tiny_pipeline"
SCHNELL_DIR = FIXTURES / "tiny_pipeline_schnell"
RUNS_DIR = FIXTURES / "tiny_pipeline_runs"

CLIP_MERGES = 1000  # first BPE merges of the real CLIP vocabulary that we keep
T5_VOCAB = 1000  # sentencepiece unigram pieces (the tokenizer adds 100 <extra_id_*> after them)
T5_MAX_LEN = 32  # max_sequence_length of every run (FLUX uses 512 / 256; kept small here)

SCHEDULER_DEV = dict(
    base_image_seq_len=256,
    base_shift=0.5,
    max_image_seq_len=4096,
    max_shift=1.15,
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
)
SCHEDULER_SCHNELL = dict(SCHEDULER_DEV, shift=1.0, use_dynamic_shifting=False)


# ---------------------------------------------------------------------------------------------
# tokenizers


def clip_vocab_merges():
    """The real CLIP BPE (open_clip's file), cut to the first CLIP_MERGES merges.

    Ids follow CLIP's order: 256 byte characters, the same with </w>, one token per merge, then
    <|startoftext|> and <|endoftext|> last (so the EOS id is the largest, as CLIP's pooling needs).
    """
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + CLIP_MERGES]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(tokens)) == len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer():
    vocab, merges = clip_vocab_merges()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    ids = tok("a photo of a cat wearing a tiny hat").input_ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert ids[0] == len(vocab) - 2 and ids[-1] == len(vocab) - 1, ids
    assert "photo</w>" in pieces and "c" in pieces, pieces  # whole words and fallback pieces
    return tok, vocab, merges


# Word lists for the synthetic multilingual corpus the T5 sentencepiece model is trained on.
WORDS = {
    "en": """a an the photo picture painting drawing sketch portrait landscape of cat dog bird fish horse cow
    wearing holding tiny small little big large huge hat cap red blue green yellow orange purple black white
    gray brown cube sphere ball box table chair bed window door house building tower bridge city street road
    car bus train boat ship plane river lake sea ocean beach mountain hill forest tree flower garden field
    sky cloud rain snow sun moon star night morning evening light dark shadow bright old young man woman
    child girl boy people friend sitting standing running walking flying swimming sleeping reading eating
    on in under over behind near next to with and at by from into through beautiful quiet happy sad
    detailed realistic cinematic colorful wooden glass metal stone paper soft warm cold sunset sunrise""".split(),
    "fr": """une un le la les photo image peinture dessin portrait paysage du de des chat chien oiseau poisson
    cheval vache portant tenant petit petite grand grande chapeau rouge bleu vert jaune noir blanc gris cube
    boule boîte table chaise lit fenêtre porte maison bâtiment tour pont ville rue route voiture bateau
    avion rivière lac mer océan plage montagne colline forêt arbre fleur jardin champ ciel nuage pluie neige
    soleil lune étoile nuit matin soir lumière ombre vieux jeune homme femme enfant fille garçon assis
    debout courant marchant volant sur dans sous avec et près derrière très beau belle été où ça""".split(),
    "de": """ein eine der die das Foto Bild Gemälde Zeichnung Porträt Landschaft Katze Hund Vogel Fisch
    Pferd Kuh trägt hält kleiner kleine kleines großer große großes Hut Mütze roter rote blauer blaue
    grüner grüne gelb schwarz weiß grau Würfel Kugel Kiste Tisch Stuhl Bett Fenster Tür Haus Gebäude Turm
    Brücke Stadt Straße Auto Zug Boot Schiff Flugzeug Fluss See Meer Strand Berg Hügel Wald Baum Blume
    Garten Feld Himmel Wolke Regen Schnee Sonne Mond Stern Nacht Morgen Abend Licht Schatten alt jung Mann
    Frau Kind Mädchen Junge sitzt steht läuft fliegt auf in unter über hinter neben mit und schön""".split(),
    "es": """una un el la los las foto imagen pintura dibujo retrato paisaje del de gato perro pájaro pez
    caballo vaca lleva sostiene pequeño pequeña grande sombrero gorra rojo roja azul verde amarillo negro
    blanco gris cubo esfera pelota caja mesa silla cama ventana puerta casa edificio torre puente ciudad
    calle camino coche autobús tren barco avión río lago mar océano playa montaña colina bosque árbol flor
    jardín campo cielo nube lluvia nieve sol luna estrella noche mañana tarde luz sombra viejo joven
    hombre mujer niño niña sentado corriendo sobre en bajo con y cerca detrás hermoso""".split(),
    "it": """una un il lo la gli foto immagine pittura disegno ritratto paesaggio del della di gatto cane
    uccello pesce cavallo mucca indossa tiene piccolo piccola grande cappello rosso rossa blu verde giallo
    nero bianco grigio cubo sfera palla scatola tavolo sedia letto finestra porta casa edificio torre ponte
    città strada macchina treno barca nave aereo fiume lago mare oceano spiaggia montagna collina bosco
    albero fiore giardino campo cielo nuvola pioggia neve sole luna stella notte mattina sera luce ombra
    vecchio giovane uomo donna bambino ragazza seduto corre sul nel sotto con e vicino dietro bello""".split(),
    "pt": """uma um o a os as foto imagem pintura desenho retrato paisagem do da de gato cão pássaro peixe
    cavalo vaca usando segurando pequeno pequena grande chapéu vermelho azul verde amarelo preto branco
    cinza cubo bola caixa mesa cadeira cama janela porta casa prédio torre ponte cidade rua estrada carro
    trem barco navio avião rio lago mar oceano praia montanha floresta árvore flor jardim céu nuvem chuva
    neve sol lua estrela noite manhã luz sombra velho jovem homem mulher criança menina menino sentado em
    sob com e perto atrás bonito coração""".split(),
    "nl": """een de het foto afbeelding schilderij tekening portret landschap van kat hond vogel vis paard
    koe draagt houdt klein kleine groot grote hoed pet rood rode blauw groen geel zwart wit grijs kubus bal
    doos tafel stoel bed raam deur huis gebouw toren brug stad straat weg auto trein boot schip vliegtuig
    rivier meer zee oceaan strand berg heuvel bos boom bloem tuin veld lucht wolk regen sneeuw zon maan ster
    nacht ochtend avond licht schaduw oud jong man vrouw kind meisje jongen zit staat loopt op in onder met
    en bij achter mooi""".split(),
}


def t5_corpus():
    rng = random.Random(1234)
    langs = sorted(WORDS)
    for _ in range(6000):
        words = WORDS[rng.choice(langs)]
        s = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        if rng.random() < 0.3:
            s += rng.choice([".", ",", "!", "?", ";", ":"])
        if rng.random() < 0.2:
            s += f" {rng.randint(0, 2025)}"
        if rng.random() < 0.5:
            s = s[0].upper() + s[1:]
        yield s


def train_t5_sentencepiece(path):
    """A unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos) and NFKC normalisation."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=t5_corpus(),
        model_writer=model,
        model_type="unigram",
        vocab_size=T5_VOCAB,
        hard_vocab_limit=True,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        normalization_rule_tsv=str(write_normalization_rules(path.parent)),
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def write_normalization_rules(folder):
    """A few NFKC rules (ligatures, full-width digits/letters, circled digits, NBSP, a combining
    accent) compiled into the model: tokenizer.json then has a small `Precompiled` normalizer,
    like T5's (whose full nmt_nfkc table would be ~400 kB)."""
    rules = {0x00A0: [0x20], 0xFB01: [0x66, 0x69], 0xFB02: [0x66, 0x6C], 0x2126: [0x3A9]}
    rules.update({0xFF10 + d: [0x30 + d] for d in range(10)})
    rules.update({0x2460 + d: [0x31 + d] for d in range(9)})
    rules.update({0xFF21 + c: [0x41 + c] for c in range(26)})
    rules.update({0xFF41 + c: [0x61 + c] for c in range(26)})
    lines = [f"{src:X}\t{' '.join(f'{d:X}' for d in dst)}" for src, dst in sorted(rules.items())]
    lines.append("65 301\tE9")  # e + combining acute -> é (NFC composition)
    path = folder / "t5_rules.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_t5_tokenizer(work):
    spdir = work / "t5_spm"
    spdir.mkdir()
    train_t5_sentencepiece(spdir / "spiece.model")
    tok = T5TokenizerFast.from_pretrained(str(spdir), model_max_length=512)
    sp = spm.SentencePieceProcessor(model_file=str(spdir / "spiece.model"))
    checks = [*PROMPTS, "Ein Foto  der Katze, été 2024!", "ﬁ①ｃａｔ\u00a0e\u0301te"]
    for text in checks:
        ids = tok(text).input_ids
        assert ids == sp.encode(text) + [1], (text, ids, sp.encode(text))
    assert tok(PROMPTS[0]).input_ids[:-1] == sp.encode(PROMPTS[0]) and 2 not in tok(PROMPTS[0]).input_ids
    return tok


# ---------------------------------------------------------------------------------------------
# models and their weights


def randomise(model, seed, rule):
    """Redraw every parameter (named_parameters order, which is fixed) from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(rule(name, p.shape, gen))
    for name, p in model.named_parameters():
        assert torch.count_nonzero(p) == p.numel(), f"zero left in {name}"


def randn(shape, gen):
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def linear_rule(norm_keys):
    """Matrices ~ N(0, 1/fan_in); norm scales 1 + 0.1 N; other vectors (biases) 0.1 N."""

    def rule(name, shape, gen):
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            return randn(shape, gen) / fan_in**0.5
        if any(k in name for k in norm_keys) and name.endswith("weight"):
            return 1.0 + 0.1 * randn(shape, gen)
        return 0.1 * randn(shape, gen)

    return rule


def build_transformer(guidance, seed, num_single_layers):
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=num_single_layers,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 14, 14),
    )
    randomise(model, seed, linear_rule(("norm_q", "norm_k", "norm_added_q", "norm_added_k")))
    return model.eval()


def build_vae(seed):
    """FLUX's AutoencoderKL config with tiny widths (FLUX: 128,256,512,512 and 32 groups)."""
    torch.manual_seed(seed)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=2,
        act_fn="silu",
        latent_channels=16,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        latents_mean=None,
        latents_std=None,
        force_upcast=True,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=True,
    )
    randomise(model, seed, linear_rule(("norm",)))
    return model.eval()


def build_clip(vocab_size, seed):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,  # FLUX's real (legacy) value: pooling takes the argmax of the ids
    )
    model = CLIPTextModel(config)
    randomise(model, seed, linear_rule(("layer_norm", "layernorm")))
    return model.eval()


def build_t5(vocab_size, seed):
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )
    model = T5EncoderModel(config)
    randomise(model, seed, linear_rule(("layer_norm",)))
    return model.eval()


# ---------------------------------------------------------------------------------------------
# saving


def save_sharded(model, folder, shards=2):
    """Re-save `model` into `folder` split into `shards` safetensors files plus an index."""
    shutil.rmtree(folder)
    unique = {t.data_ptr(): t for t in model.state_dict().values()}  # tied weights are saved once
    total = sum(t.numel() * t.element_size() for t in unique.values())
    size = total // shards + total // (4 * shards)
    model.save_pretrained(folder, max_shard_size=size, safe_serialization=True)
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(files) == shards, files
    assert len(list(folder.glob("*.index.json"))) == 1


def write_clip_vocab_files(folder, vocab, merges):
    """The slow-tokenizer files (vocab.json, merges.txt) the real FLUX repo ships in tokenizer/."""
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def save_pipeline(pipe, folder, vocab, merges):
    if folder.exists():
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    save_sharded(pipe.transformer, folder / "transformer")
    save_sharded(pipe.text_encoder_2, folder / "text_encoder_2")
    write_clip_vocab_files(folder / "tokenizer", vocab, merges)
    for path in folder.rglob("*.json"):
        assert "/tmp" not in path.read_text(), path


def check_reloaded(pipe, folder, cls=FluxPipeline):
    loaded = cls.from_pretrained(folder, dtype=torch.float32)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name
    for text in PROMPTS:
        assert loaded.tokenizer(text).input_ids == pipe.tokenizer(text).input_ids
        assert loaded.tokenizer_2(text).input_ids == pipe.tokenizer_2(text).input_ids
    # tokenizer/ without tokenizer.json (vocab.json + merges.txt only) must tokenize the same
    slow_dir = folder.parent / ".clip_vocab_only"
    shutil.copytree(folder / "tokenizer", slow_dir)
    (slow_dir / "tokenizer.json").unlink()
    slow = CLIPTokenizer.from_pretrained(slow_dir)
    shutil.rmtree(slow_dir)
    for text in PROMPTS:
        assert slow(text).input_ids == pipe.tokenizer(text).input_ids, text
    return loaded


# ---------------------------------------------------------------------------------------------
# runs

PROMPTS = ["a photo of a cat wearing a tiny hat", "a red cube on a table", "a cat", "a dog"]


class Recorder:
    """Captures what the transformer received and returned and the latents after each step."""

    def __init__(self, pipe):
        self.inputs, self.velocities, self.steps = [], [], []
        self.handle = pipe.transformer.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, _module, _args, kwargs, output):
        g = kwargs.get("guidance")
        self.inputs.append((kwargs["timestep"].clone(), None if g is None else g.clone()))
        self.velocities.append(output[0].clone())

    def callback(self, _pipe, _i, _t, kwargs):
        self.steps.append(kwargs["latents"].clone())
        return {}

    def close(self):
        self.handle.remove()


def clip_ids(pipe, prompt):
    """The ids `_get_clip_prompt_embeds` feeds CLIP (pipeline_flux.py 281-291)."""
    return pipe.tokenizer(
        prompt, padding="max_length", max_length=pipe.tokenizer_max_length, truncation=True,
        return_overflowing_tokens=False, return_length=False, return_tensors="pt",
    ).input_ids


def t5_ids(pipe, prompt, max_len):
    """The ids `_get_t5_prompt_embeds` feeds T5 (pipeline_flux.py 234-243)."""
    return pipe.tokenizer_2(
        prompt, padding="max_length", max_length=max_len, truncation=True,
        return_length=False, return_overflowing_tokens=False, return_tensors="pt",
    ).input_ids


def pack(latents):
    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def expected_schedule(pipe, steps, image_seq_len):
    """Recompute the schedule exactly as FluxPipeline.__call__ does (pipeline_flux.py 823-842)."""
    sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    mu = calculate_shift(
        image_seq_len,
        sched.config.get("base_image_seq_len", 256),
        sched.config.get("max_image_seq_len", 4096),
        sched.config.get("base_shift", 0.5),
        sched.config.get("max_shift", 1.15),
    )
    timesteps, _ = retrieve_timesteps(sched, steps, "cpu", sigmas=sigmas, mu=mu)
    return timesteps, sched.sigmas, mu


def text_tensors(pipe, prompt, prompt_2):
    p2 = prompt_2 or prompt
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(
        prompt=prompt, prompt_2=prompt_2, device="cpu", max_sequence_length=T5_MAX_LEN
    )
    return {
        "clip_ids": clip_ids(pipe, [prompt] if isinstance(prompt, str) else prompt),
        "t5_ids": t5_ids(pipe, [p2] if isinstance(p2, str) else p2, T5_MAX_LEN),
        "prompt_embeds": prompt_embeds,
        "pooled_prompt_embeds": pooled,
        "txt_ids": text_ids,
    }


def denoise_tensors(rec, steps):
    out = {
        "transformer_timestep": torch.stack([t for t, _ in rec.inputs]),  # = timestep / 1000
        "velocities": torch.stack(rec.velocities),
        "latents_steps": torch.stack(rec.steps),
        "latents_out": rec.steps[-1],
    }
    guidances = [g for _, g in rec.inputs]
    if guidances[0] is not None:
        out["transformer_guidance"] = torch.stack(guidances)
    assert len(rec.steps) == steps
    return out


def decode_reference(pipe, latents_out, height, width):
    """The tail of __call__ (pipeline_flux.py 961-965) done step by step."""
    unpacked = pipe._unpack_latents(latents_out, height, width, pipe.vae_scale_factor)
    vae_in = unpacked / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    decoded = pipe.vae.decode(vae_in, return_dict=False)[0]
    return {"vae_input": vae_in}, decoded


def generate(pipe, call, output_type):
    """One pipeline call; also returns what prepare_latents returned and what the steps saw."""
    rec = Recorder(pipe)
    prepared = []
    original = pipe.prepare_latents
    pipe.prepare_latents = lambda *a, **k: prepared.append((a, original(*a, **k))) or prepared[-1][1]
    try:
        images = pipe(**call, output_type=output_type, callback_on_step_end=rec.callback).images
    finally:
        del pipe.prepare_latents
        rec.close()
    return images, rec, prepared[0]


def run_text_to_image(pipe, name, folder, call, seed, fixed_latents):
    """One FluxPipeline call (np output), repeated with PIL output; every intermediate saved.

    With fixed_latents the unpacked noise is drawn here and passed packed as `latents=`;
    otherwise the pipeline draws it itself from `generator=torch.Generator("cpu").manual_seed(seed)`.
    """
    steps, height, width = call["num_inference_steps"], call["height"], call["width"]
    batch = len(call["prompt"]) if isinstance(call["prompt"], list) else 1
    tensors = text_tensors(pipe, call["prompt"], call.get("prompt_2"))
    # prepare_latents -> randn_tensor -> torch.randn(shape, generator, dtype=float32) on the CPU
    noise = torch.randn((batch, 16, height // 8, width // 8), generator=torch_generator(seed), dtype=torch.float32)
    kwargs = dict(call, max_sequence_length=T5_MAX_LEN)

    def fresh():
        return dict(kwargs, latents=pack(noise)) if fixed_latents else dict(kwargs, generator=torch_generator(seed))

    image, rec, (_, (latents_in, img_ids)) = generate(pipe, fresh(), "np")
    assert torch.equal(latents_in, pack(noise)), "the pipeline started from other latents"
    tensors.update(latents_in=noise, latents_in_packed=latents_in, img_ids=img_ids)
    timesteps, sigmas, mu = expected_schedule(pipe, steps, latents_in.shape[1])
    assert torch.equal(timesteps, pipe.scheduler.timesteps) and torch.equal(sigmas, pipe.scheduler.sigmas)
    tensors.update(timesteps=timesteps, sigmas=sigmas)
    tensors.update(denoise_tensors(rec, steps))
    assert torch.equal(tensors["transformer_timestep"], timesteps[:, None].expand(-1, batch) / 1000)
    finish(pipe, tensors, image, fresh, height, width)
    meta = dict(call, prompt_2=call.get("prompt_2"), max_sequence_length=T5_MAX_LEN, pipeline=folder.name)
    meta.update(image_seq_len=latents_in.shape[1], mu=mu if pipe.scheduler.config.use_dynamic_shifting else None)
    meta["seed"] = seed
    meta["noise"] = noise_note(seed, list(noise.shape))
    meta["noise"]["used_as"] = (
        "latents=latents_in_packed passed to the call" if fixed_latents
        else "generator=torch.Generator('cpu').manual_seed(seed) passed to the call; no latents"
    )
    write_run(name, tensors, meta)


def finish(pipe, tensors, image, fresh, height, width):
    """Decode check, then the same call again with output_type="pil" for the uint8 image."""
    vae_tensors, decoded = decode_reference(pipe, tensors["latents_out"], height, width)
    tensors.update(vae_tensors)
    tensors["image"] = torch.from_numpy(image)
    assert torch.equal(tensors["image"], (decoded * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))
    pil, rec, _ = generate(pipe, fresh(), "pil")
    assert torch.equal(rec.steps[-1], tensors["latents_out"]), "the PIL call diverged"
    tensors["image_u8"] = torch.from_numpy(np.stack([np.asarray(p) for p in pil]))


def torch_generator(seed):
    return torch.Generator("cpu").manual_seed(seed)


def noise_note(seed, shape, draws=None):
    return {
        "seed": seed,
        "generator": "torch.Generator('cpu').manual_seed(seed), CPU mt19937",
        "draws": draws or [{"name": "latents_in", "shape": shape, "call": "torch.randn(shape, generator, float32)"}],
    }


def synthetic_image(height, width):
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255) // (width - 1)
    g = (y * 255) // (height - 1)
    b = ((x + y) * 7) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def run_img2img(pipe, name, folder, call, seed):
    """FluxImg2ImgPipeline on a synthetic init image. It cannot take the noise directly (`latents=`
    would skip the VAE encode and the noising), so it gets generator=manual_seed(seed), which draws
    twice: the VAE posterior sample's eps first, then the noise. Both draws are recomputed here."""
    i2i = FluxImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    steps, height, width, strength = call["num_inference_steps"], call["height"], call["width"], call["strength"]
    init_u8 = synthetic_image(height, width)
    tensors = text_tensors(i2i, call["prompt"], call.get("prompt_2"))
    kwargs = dict(call, image=PIL.Image.fromarray(init_u8), max_sequence_length=T5_MAX_LEN)

    def fresh():
        return dict(kwargs, generator=torch_generator(seed))

    image, rec, ((init_image, latent_timestep, *_), (latents_in, img_ids)) = generate(i2i, fresh(), "np")
    # prepare_latents (pipeline_flux_img2img.py 612-660) redone from its two draws
    gen = torch_generator(seed)
    posterior = i2i.vae.encode(init_image).latent_dist
    eps = torch.randn(posterior.mean.shape, generator=gen, dtype=torch.float32)
    vae = i2i.vae.config
    image_latents = (posterior.mean + posterior.std * eps - vae.shift_factor) * vae.scaling_factor
    noise = torch.randn((1, 16, height // 8, width // 8), generator=gen, dtype=torch.float32)
    full_ts, full_sigmas, mu = expected_schedule(i2i, steps, (height // 16) * (width // 16))
    t_start = int(max(steps - min(steps * strength, steps), 0))  # get_timesteps, lines 479-488
    sigma = full_sigmas[t_start]
    noised = sigma * noise + (1.0 - sigma) * image_latents  # scheduler.scale_noise
    assert torch.equal(pack(noised), latents_in), (pack(noised) - latents_in).abs().max()
    assert torch.equal(i2i.scheduler.sigmas, full_sigmas) and torch.equal(latent_timestep, full_ts[t_start:][:1])
    assert torch.equal(i2i.scheduler.timesteps, full_ts)
    tensors.update(
        init_image_u8=torch.from_numpy(init_u8)[None],
        init_image=init_image,
        posterior_mean=posterior.mean,
        posterior_std=posterior.std,
        encode_eps=eps,
        image_latents=image_latents,
        image_latents_mode=(posterior.mean - vae.shift_factor) * vae.scaling_factor,
        noise=noise,
        latents_in=noised,
        latents_in_packed=latents_in,
        img_ids=img_ids,
        sigmas=full_sigmas,
        timesteps=full_ts[t_start:],
        timesteps_full=full_ts,
    )
    tensors.update(denoise_tensors(rec, steps - t_start))
    assert torch.equal(tensors["transformer_timestep"][:, 0], full_ts[t_start:] / 1000)
    finish(i2i, tensors, image, fresh, height, width)
    meta = dict(call, prompt_2=call.get("prompt_2"), max_sequence_length=T5_MAX_LEN, pipeline=folder.name)
    meta.update(
        pipeline_class="FluxImg2ImgPipeline",
        seed=seed,
        image_seq_len=(height // 16) * (width // 16),
        mu=mu,
        t_start=t_start,
        init_image="init_image_u8 given as a PIL RGB image: r = x*255//(w-1), g = y*255//(h-1), b = (x+y)*7 % 256",
        noise=noise_note(seed, list(noise.shape), draws=[
            {"name": "encode_eps", "shape": list(eps.shape), "call": "vae.encode(init_image).latent_dist.sample(generator)"},
            {"name": "noise", "shape": list(noise.shape), "call": "prepare_latents: torch.randn(shape, generator, float32)"},
        ]),
    )
    meta["noise"]["used_as"] = "generator=torch.Generator('cpu').manual_seed(seed) passed to the call"
    write_run(name, tensors, meta)


def write_run(name, tensors, meta, runs_dir=None):
    """Writes <runs_dir>/<name>.safetensors + <name>.json (runs_dir defaults to RUNS_DIR)."""
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    tensors = {k: v.detach().clone().contiguous() for k, v in sorted(tensors.items())}
    for k, v in tensors.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    meta["tensors"] = {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in tensors.items()}
    save_file(tensors, runs_dir / f"{name}.safetensors")
    text = json.dumps(meta, indent=2, ensure_ascii=False)
    text = re.sub(r"\[\s*(-?[\d.]+(?:,\s*-?[\d.]+)*)\s*\]", lambda m: "[" + re.sub(r",\s*", ", ", m[1]) + "]", text)
    (runs_dir / f"{name}.json").write_text(text + "\n")


# ---------------------------------------------------------------------------------------------


def main():
    torch.set_num_threads(1)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    work = FIXTURES / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        clip_tok, vocab, merges = build_clip_tokenizer()
        t5_tok = build_t5_tokenizer(work)
    finally:
        shutil.rmtree(work)

    def pipeline(transformer, scheduler_config):
        return FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config),
            vae=build_vae(200),
            text_encoder=build_clip(len(clip_tok), 300),
            tokenizer=clip_tok,
            text_encoder_2=build_t5(len(t5_tok), 400),
            tokenizer_2=t5_tok,
            transformer=transformer,
        )

    dev = pipeline(build_transformer(True, 100, num_single_layers=2), SCHEDULER_DEV)
    schnell = pipeline(build_transformer(False, 111, num_single_layers=1), SCHEDULER_SCHNELL)
    save_pipeline(dev, DEV_DIR, vocab, merges)
    save_pipeline(schnell, SCHNELL_DIR, vocab, merges)
    for path in SCHNELL_DIR.rglob("*"):  # all but transformer/ and scheduler/ are copies of dev's files
        rel = path.relative_to(SCHNELL_DIR)
        if path.is_file() and rel.parts[0] not in ("transformer", "scheduler"):
            assert path.read_bytes() == (DEV_DIR / rel).read_bytes(), rel
    dev = check_reloaded(dev, DEV_DIR)
    schnell = check_reloaded(schnell, SCHNELL_DIR)
    dev.set_progress_bar_config(disable=True)
    schnell.set_progress_bar_config(disable=True)

    if RUNS_DIR.exists():
        shutil.rmtree(RUNS_DIR)
    RUNS_DIR.mkdir(parents=True)
    with torch.no_grad():
        run_text_to_image(
            dev, "dev", DEV_DIR,
            dict(prompt=PROMPTS[0], height=64, width=96, num_inference_steps=4, guidance_scale=3.5),
            seed=0, fixed_latents=True,
        )
        run_text_to_image(
            schnell, "schnell", SCHNELL_DIR,
            dict(prompt=PROMPTS[1], height=48, width=64, num_inference_steps=4, guidance_scale=0.0),
            seed=1, fixed_latents=True,
        )
        run_text_to_image(
            dev, "dev_batch2", DEV_DIR,
            dict(prompt=["a cat", "a dog"], height=32, width=32, num_inference_steps=3, guidance_scale=4.0),
            seed=2, fixed_latents=True,
        )
        run_img2img(
            dev, "dev_img2img", DEV_DIR,
            dict(prompt=PROMPTS[0], height=64, width=64, num_inference_steps=5, guidance_scale=3.5, strength=0.6),
            seed=3,
        )
        run_text_to_image(
            dev, "dev_seeded", DEV_DIR,
            dict(prompt=PROMPTS[0], height=64, width=96, num_inference_steps=4, guidance_scale=3.5),
            seed=42, fixed_latents=False,
        )
    print("wrote", DEV_DIR, SCHNELL_DIR, RUNS_DIR)


if __name__ == "__main__":
    main()

"""A tiny LTX-2.5-like set of per-component files in the reference's key names (see
tests/loading/test_ltx2_split.py for the conventions), and the single-file bundle of the same tensors."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from ltxengine.loading.ltx2_text import V2_EXPECTED
from tests.helpers import perturb_
from tests.models import audio_vae_fixtures as audio_t
from tests.models import ltx2_text_fixtures as text_t
from tests.models import ltx2_transformer_fixtures as dit_t
from tests.models import ltx2_video_vae_fixtures as vae_t
from tests.models import vocoder_fixtures as voc_t

GEMMA_VERSION = "gemma4-12b-ltx-v1"  # what the released 2.5 header and Gemma config carry
DIT = dict(dit_t.TINY_V23["v25"], rope_type="split", rope_double_precision=True, caption_channels=text_t.D4)
# the 2.3 connectors at the DiT's widths (2 x 16 video, 2 x 8 audio) reading the tiny Gemma 4
CONNECTORS = dict(text_t.V25, video_hidden_dim=32, audio_hidden_dim=16, video_connector_num_attention_heads=2,
                  video_connector_attention_head_dim=16, audio_connector_num_attention_heads=2,
                  audio_connector_attention_head_dim=8, audio_connector_num_learnable_registers=16)


def make_models():
    """diffusers modules of a tiny LTX-2.5-like set with random weights, one per component."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    torch.manual_seed(0)
    dit = LTX2VideoTransformer3DModel(**DIT).eval()
    perturb_(dit, seed=3)
    _, connectors = text_t.make_pair(**CONNECTORS)
    return {"transformer": dit, "connectors": connectors, "vae": vae_t.make_pair("2.3")[0],
            "audio_vae": audio_t.make_pair("release")[0], "vocoder": voc_t.make_bwe_pair("release")[0]}


def header_of(models) -> dict:
    from ltxengine.config import LTX2TransformerConfig, parse_config
    from ltxengine.models.video_vae import LTX2VideoVAEConfig
    c = models["connectors"].config
    transformer = dict(dit_t.original_section(parse_config(LTX2TransformerConfig, dict(models["transformer"].config),
                                                           "test")),
                       connector_num_attention_heads=c.video_connector_num_attention_heads,
                       connector_attention_head_dim=c.video_connector_attention_head_dim,
                       connector_num_layers=c.video_connector_num_layers,
                       connector_num_learnable_registers=c.video_connector_num_learnable_registers,
                       audio_connector_num_attention_heads=c.audio_connector_num_attention_heads,
                       audio_connector_attention_head_dim=c.audio_connector_attention_head_dim,
                       audio_connector_num_layers=c.audio_connector_num_layers,
                       connector_positional_embedding_max_pos=[c.connector_rope_base_seq_len],
                       connector_apply_gated_attention=True, **V2_EXPECTED)
    return {"transformer": transformer,
            "vae": vae_t.original_section(parse_config(LTX2VideoVAEConfig, vae_t.CASES_V23["2.3"], "test")),
            "audio_vae": audio_t.original_header(audio_t.CASES["release"])["audio_vae"],
            "vocoder": voc_t.release_bwe_section(vocoder=voc_t.BWE_CASES["release"]["hidden_channels"],
                                                 bwe=voc_t.BWE_CASES["release"]["bwe_hidden_channels"])}


def tensors_of(models) -> dict:
    """The bundle's tensors, original names."""
    sd = {"model.diffusion_model." + dit_t.to_original(k): v for k, v in models["transformer"].state_dict().items()}
    sd.update(text_t.to_original(models["connectors"].state_dict()))
    sd.update(vae_t.original_state_dict(vae_t.make_pair("2.3")[1]))
    sd.update(audio_t.to_original(models["audio_vae"].state_dict()))
    sd.update(voc_t.bwe_to_original(models["vocoder"].state_dict()))
    return {k: v.detach().contiguous() for k, v in sd.items()}


META = {"model_version": "2.5.0", "gemma_source_checkpoint": json.dumps({"gemma_version": GEMMA_VERSION})}


def _comfy_flat(key: str) -> str:
    """gemma_assets.py _flatten_gemma4_unified_keys_for_comfy @400fd31."""
    for hf, flat in (("model.language_model.", "model."), ("model.vision_embedder.", "vision_model."),
                     ("model.embed_vision.", "multi_modal_projector."), ("model.embed_audio.", "audio_projector.")):
        if key.startswith(hf):
            return flat + key[len(hf):]
    return key


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def write_text_encoder_file(path, gemma_root, projection: dict):
    """build_text_encoder_tensors_from_gemma_root + save_text_encoder_safetensors: the root's weights under
    ComfyUI's flat names, the projection, tokenizer.json and every other *.json / *.jinja but config.json
    as uint8 tensors, config.json as the header's gemma_config."""
    tensors = {_comfy_flat(k): v for k, v in load_file(gemma_root / "model.safetensors").items()}
    tensors.update(projection)
    tensors["tokenizer_json"] = _bytes_tensor((gemma_root / "tokenizer" / "tokenizer.json").read_bytes())
    for side in sorted([*gemma_root.rglob("*.json"), *gemma_root.rglob("*.jinja")]):
        if side.name not in ("config.json", "tokenizer.json", "model.safetensors.index.json"):
            tensors["hf_asset__" + side.name] = _bytes_tensor(side.read_bytes())
    meta = {"format": "pt", "gemma_config": (gemma_root / "config.json").read_text()}
    save_file(tensors, str(path), metadata=meta)
    return path


def write_split(root, models, gemma_root, *, header=None, tensors=None, meta=None):
    """The set as Lightricks/LTX-2.5 lays it out; each file's header holds its own config sections."""
    header, tensors, meta = header or header_of(models), tensors or tensors_of(models), meta or META
    part = lambda prefix: {k: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    save_file(part("model.diffusion_model."), str(root / "diffusion_models" / "ltx-2.5-tiny-transformer.safetensors"),
              metadata={"config": json.dumps({"transformer": header["transformer"]}), **meta})
    write_text_encoder_file(root / "text_encoders" / "gemma4-tiny-with-proj.safetensors", gemma_root,
                            part("text_embedding_projection."))
    save_file({k[len("vae."):]: v for k, v in part("vae.").items()},
              str(root / "vae" / "ltx-2.5-tiny-video-vae-conv.safetensors"),
              metadata={"config": json.dumps({"vae": header["vae"]})})
    save_file({**part("audio_vae."), **part("vocoder.")}, str(root / "vae" / "ltx-2.5-tiny-audio-vae.safetensors"),
              metadata={"config": json.dumps({"audio_vae": header["audio_vae"], "vocoder": header["vocoder"]})})
    return root


def write_set(root, models):
    """(split folder, bundle, Gemma 4 folder) under ``root``."""
    gemma = text_t.write_gemma4(root / "gemma4", gemma_version=GEMMA_VERSION)
    bundle = root / "ltx-2.5-tiny.safetensors"
    save_file(tensors_of(models), str(bundle), metadata={"config": json.dumps(header_of(models)), **META})
    return write_split(root / "split", models, gemma), bundle, gemma

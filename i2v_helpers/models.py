"""The SVD model layer: load a pipeline, build the tiny SVD or SVD-xt's architecture, count parameters.

``load_pipeline`` is the one call for the real Stable Video Diffusion (a hub id such as
``stabilityai/stable-video-diffusion-img2vid-xt`` or a local folder) and for the tiny
SVD this project ships in ``data_samples/models/tiny-svd``. The tiny model uses the very
same diffusers/transformers classes with smaller widths. ``load_model`` adds what a
fine-tune left: a run folder's pipeline, a LoRA folder, an adapter-layer folder.

Introduced in notebook 03 (inside SVD).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from .adapters import load_adapters
from .conditioning import DEFAULT_FPS, DEFAULT_MOTION_BUCKET
from .device import pick_device
from .lora import load_lora_into_pipeline

SVD_XT_ID = "stabilityai/stable-video-diffusion-img2vid-xt"
SVD_XT_FRAMES = 25  # SVD-xt's clip length ...
SVD_XT_SIZE = (576, 1024)  # ... and its (H, W) in px
TINY_MODEL_DIR = "data_samples/models/tiny-svd"  # the shipped tiny SVD, from the repo root (configs, the CLI)
TINY_SVD_DIR = Path(__file__).resolve().parent.parent / TINY_MODEL_DIR  # the same folder, found from anywhere

# SVD's scheduler config (stabilityai/stable-video-diffusion-img2vid-xt/scheduler).
SVD_SCHEDULER_CONFIG = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
    steps_offset=1, timestep_spacing="leading", timestep_type="continuous", trained_betas=None,
    use_karras_sigmas=True,
)


@dataclass
class TinySVDConfig:
    """Widths of the tiny SVD. Defaults are v2 (64×64 px, 16 frames), the shipped weights' geometry
    (built on a 2-core CPU over several sessions: ``benchmarks/v2_cpu_build.sh``; on a GPU the same recipe
    is ``benchmarks/gpu_build_tiny.sh``). :data:`TINY_V1` is the first shipped base, kept for comparisons.

    v2 encodes 64 px frames through a 4× VAE (three down blocks), so the UNet sees a
    **16×16 latent grid** per frame: a ball of radius 4–6 px covers 2–3 latent pixels
    and can move by fractions of a latent pixel per frame. v1 (:data:`TINY_V1`) used
    SVD's 8× VAE, an 8×8 grid on which objects dissolved into blobs.
    Chosen by measured CPU cost (``benchmarks/RESULTS.md``, ``i2v bench sample`` on 2 cores, 16
    frames, 25 steps): attention at 16×16 makes a video 6.29 s; attention only at 8×8 with widths
    (64, 96), 4.00 s (v1: 2.33 s); on the machine that shipped it, 5.4–6.7 s against v1's 2.7 s (over the
    4 s budget). Widths (64, 96) also keep the weights at 18.6 MB (< 20 MB).

    GroupNorm in diffusers' SVD blocks has 32 groups, so every block width is a multiple
    of 32 and ≥ 64 (with 32 channels each channel would be normalised alone, which stalls
    training).
    """

    resolution: int = 64
    num_frames: int = 16
    vae_channels: tuple[int, ...] = (64, 128, 128)  # 3 levels → 4× downsampling (SVD: 4 levels, 8×)
    vae_layers_per_block: int = 1
    latent_channels: int = 8  # SVD has 4; 16×16×8 keeps small frames sharp
    unet_channels: tuple[int, ...] = (64, 96)
    unet_attention: tuple[bool, ...] = (False, True)  # per level: spatial + temporal transformers
    unet_layers_per_block: int = 1
    unet_heads: tuple[int, ...] = (2, 3)
    time_embed_dim: int = 32  # per added time id (fps, motion bucket, noise aug)
    clip_hidden: int = 64
    clip_layers: int = 2
    clip_heads: int = 4
    clip_patch: int = 32  # the pipeline feeds CLIP 224×224 images
    embed_dim: int = 64  # CLIP projection = UNet cross-attention width
    scheduler: dict = field(default_factory=lambda: dict(SVD_SCHEDULER_CONFIG))
    frame_size: tuple[int, int] | None = None  # (H, W) of a non-square model; None: resolution × resolution

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    @property
    def unet_sample_size(self) -> int | list[int]:
        """The UNet's ``sample_size``: the latent side (square), or ``[h, w]`` for ``frame_size``."""
        if self.frame_size is None:
            return self.latent_size
        return [self.frame_size[0] // self.vae_scale_factor, self.frame_size[1] // self.vae_scale_factor]


# The first shipped base (8×8 latent grid), kept to compare recipes and throughput.
TINY_V1 = TinySVDConfig(vae_channels=(64, 128, 128, 128), latent_channels=16, unet_channels=(64, 128),
                        unet_attention=(True, False), unet_heads=(2, 4))
TINY_PRESETS = {"v1": TINY_V1, "v2": TinySVDConfig()}


def tiny_config_of(folder: str | Path) -> TinySVDConfig:
    """The :class:`TinySVDConfig` of a saved tiny pipeline, read from its components' ``config.json``."""

    def read(name):
        return json.loads((Path(folder) / name / "config.json").read_text())

    unet, vae, clip = read("unet"), read("vae"), read("image_encoder")
    return TinySVDConfig(
        resolution=vae["sample_size"], num_frames=unet["num_frames"], vae_channels=tuple(vae["block_out_channels"]),
        vae_layers_per_block=vae["layers_per_block"], latent_channels=vae["latent_channels"],
        unet_channels=tuple(unet["block_out_channels"]),
        unet_attention=tuple(t.startswith("CrossAttn") for t in unet["down_block_types"]),
        unet_layers_per_block=unet["layers_per_block"], unet_heads=tuple(unet["num_attention_heads"]),
        time_embed_dim=unet["addition_time_embed_dim"], clip_hidden=clip["hidden_size"],
        clip_layers=clip["num_hidden_layers"], clip_heads=clip["num_attention_heads"], clip_patch=clip["patch_size"],
        embed_dim=clip["projection_dim"])


def build_tiny_vae(cfg: TinySVDConfig):

    n = len(cfg.vae_channels)
    return AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels, layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels, sample_size=cfg.resolution, scaling_factor=1.0,
        force_upcast=False)


def build_tiny_unet(cfg: TinySVDConfig):
    """The UNet; levels with ``unet_attention`` use the cross-attention blocks (SVD-xt has
    attention on every level but the lowest; the tiny v2 only on its lowest, 8×8)."""

    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal"
                 for a in cfg.unet_attention)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
               for a in reversed(cfg.unet_attention))
    return UNetSpatioTemporalConditionModel(
        sample_size=cfg.unet_sample_size, in_channels=2 * cfg.latent_channels,
        out_channels=cfg.latent_channels, down_block_types=down, up_block_types=up,
        block_out_channels=cfg.unet_channels, addition_time_embed_dim=cfg.time_embed_dim,
        projection_class_embeddings_input_dim=3 * cfg.time_embed_dim,
        layers_per_block=cfg.unet_layers_per_block, cross_attention_dim=cfg.embed_dim,
        num_attention_heads=cfg.unet_heads, num_frames=cfg.num_frames)


def build_tiny_image_encoder(cfg: TinySVDConfig):

    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=cfg.clip_hidden, intermediate_size=4 * cfg.clip_hidden,
        num_hidden_layers=cfg.clip_layers, num_attention_heads=cfg.clip_heads, image_size=224,
        patch_size=cfg.clip_patch, projection_dim=cfg.embed_dim, hidden_act="gelu"))


def svd_pipeline(vae, image_encoder, unet, scheduler_config: dict):
    """A ``StableVideoDiffusionPipeline`` of these models, an ``EulerDiscreteScheduler`` of
    ``scheduler_config`` and SVD's 224 px ``CLIPImageProcessor``."""
    # imported here, not at the top (also in load_pipeline, pretrain._probe_pipe): without torchvision (the CPU
    # build) the pipeline's module resolves transformers' CLIPImageProcessor, which then warns that it falls back to
    # CLIPImageProcessorPil; at the top, that warning would open every `i2v` command's output, errors included
    from diffusers import StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=EulerDiscreteScheduler(**scheduler_config),
        feature_extractor=CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}))


def build_tiny_pipeline(cfg: TinySVDConfig | None = None, seed: int = 0):
    """A randomly initialised tiny ``StableVideoDiffusionPipeline`` (same classes as SVD-xt)."""
    cfg = cfg or TinySVDConfig()
    torch.manual_seed(seed)
    return svd_pipeline(build_tiny_vae(cfg), build_tiny_image_encoder(cfg), build_tiny_unet(cfg), cfg.scheduler)


# ----------------------------------------------------------------------- SVD-xt's architecture

def svd_xt_unet(num_frames: int = SVD_XT_FRAMES):
    """SVD-xt's UNet with random weights, built on the current default device (diffusers'
    defaults for ``UNetSpatioTemporalConditionModel`` are SVD-xt's config)."""

    return UNetSpatioTemporalConditionModel(num_frames=num_frames)


def svd_xt_unet_on_meta(num_frames: int = SVD_XT_FRAMES):
    """SVD-xt's UNet architecture on the meta device (shapes only, no storage)."""
    with torch.device("meta"):
        return svd_xt_unet(num_frames)


def svd_xt_vae():
    """SVD-xt's ``AutoencoderKLTemporalDecoder`` (diffusers' defaults are a 1-block toy), random weights."""

    return AutoencoderKLTemporalDecoder(
        down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=4, sample_size=768, scaling_factor=0.18215, force_upcast=True)


def svd_xt_image_encoder():
    """SVD-xt's image encoder, OpenCLIP ViT-H/14 as ``CLIPVisionModelWithProjection``, random weights."""

    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, patch_size=14,
        image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5))


def build_svd_xt_random(device="cpu", dtype=torch.float32):
    """A ``StableVideoDiffusionPipeline`` with SVD-xt's architectures (:func:`svd_xt_unet`,
    :func:`svd_xt_vae`, :func:`svd_xt_image_encoder`) and random weights, built directly on ``device``."""
    with torch.device(device):
        unet = svd_xt_unet().to(dtype)
        vae = svd_xt_vae().to(dtype)
        clip = svd_xt_image_encoder().to(dtype)
    # torch.Tensor([...]) buffers (the time mixers' mix factors) ignore the device context
    unet, vae, clip = unet.to(device), vae.to(device), clip.to(device)
    return svd_pipeline(vae, clip, unet, SVD_SCHEDULER_CONFIG)


def load_pipeline(name_or_path: str | Path = TINY_SVD_DIR, device=None, dtype=None, variant=None):
    """Load a ``StableVideoDiffusionPipeline`` from a local folder or a hub id.

    The same call serves the shipped tiny SVD and the real SVD-xt. ``device``/``dtype``
    default to :func:`i2v_helpers.device.pick_device`. Weights are read from
    safetensors only (``use_safetensors=True``: no pickle is ever loaded).
    """

    spec = pick_device()
    device = device or spec.device
    dtype = dtype or spec.dtype
    p = Path(name_or_path)
    if p.exists():
        if not (p / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{p}: is a folder but not a diffusers pipeline (no model_index.json). Point to the folder "
                f"that holds model_index.json, unet/, vae/, image_encoder/ — e.g. {TINY_MODEL_DIR}, "
                "or a training run's merged/ or pipeline/ folder")
    elif str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        raise FileNotFoundError(
            f"{name_or_path}: neither a local folder nor a hub id of the form 'org/name' "
            f"(e.g. {SVD_XT_ID}); check the path")
    from diffusers import StableVideoDiffusionPipeline  # not at the top: see svd_pipeline

    try:
        pipe = StableVideoDiffusionPipeline.from_pretrained(
            str(name_or_path), dtype=dtype, variant=variant, use_safetensors=True)
    except OSError as e:
        raise FileNotFoundError(
            f"{name_or_path}: could not load it as a pipeline ({e}). A hub id needs network access "
            "(or a local copy in the Hugging Face cache); otherwise give a local folder") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_model(path: str | Path, lora: str | Path | None = None, adapters: str | Path | None = None, device=None,
               dtype=None):
    """A model as a fine-tune left it: the pipeline at ``path`` (a pipeline folder, a hub id, or a
    run folder's ``merged/`` or ``pipeline/``: :func:`resolve_model_path`), loaded by
    :func:`load_pipeline` (``device``/``dtype`` as there), then a LoRA folder in peft format
    (:func:`~i2v_helpers.lora.load_lora_into_pipeline`) and/or an adapter-layer folder
    (:func:`~i2v_helpers.adapters.load_adapters`) applied. What ``i2v sample``, ``i2v eval`` and
    the notebooks load."""
    pipe = load_pipeline(resolve_model_path(path), device=device, dtype=dtype)
    if lora:
        load_lora_into_pipeline(pipe, lora)
    if adapters:
        load_adapters(pipe.unet, adapters)
    return pipe


# ----------------------------------------------------------------------- geometry

def pixel_size(sample_size: int | list[int], vae_scale_factor: int) -> tuple[int, int]:
    """``(H, W)`` in px of a UNet ``sample_size`` (latent side, or ``[h, w]``) through the VAE."""
    h, w = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    return h * vae_scale_factor, w * vae_scale_factor


def native_resolution(model_path: str) -> int | list[int]:
    """The pixel size a pipeline folder generates by default (UNet sample_size × VAE factor):
    one int for a square model, ``[H, W]`` otherwise."""
    p = Path(model_path)
    try:
        unet = json.loads((p / "unet" / "config.json").read_text())
        vae = json.loads((p / "vae" / "config.json").read_text())
    except FileNotFoundError as e:
        raise ValueError(f"{model_path}: cannot read its unet/vae config; set `resolution` in the config") from e
    h, w = pixel_size(unet["sample_size"], 2 ** (len(vae["block_out_channels"]) - 1))
    return h if h == w else [h, w]


def resolve_model_path(init_from: str | Path) -> str:
    """A pipeline folder for ``init_from``: a run folder's ``merged/`` or ``pipeline/``, or as given."""
    p = Path(init_from)
    for sub in ("merged", "pipeline"):
        if (p / sub / "model_index.json").is_file():
            return str(p / sub)
    if p.exists() and not (p / "model_index.json").is_file():
        raise FileNotFoundError(f"{p}: no pipeline here (no model_index.json, merged/ or pipeline/); "
                                "did the earlier stage finish?")
    return str(init_from)


def model_geometry(pipe) -> tuple[int, int, int]:
    """``(num_frames, H, W)`` a pipeline makes by default: the UNet config's ``num_frames`` and
    ``sample_size`` (an int for squares, ``[h, w]`` otherwise) times the VAE's scale factor.
    What generation, evaluation and validation use unless told otherwise."""
    c = pipe.unet.config
    return (int(c.num_frames), *pixel_size(c.sample_size, pipe.vae_scale_factor))


def set_model_geometry(pipe, size: int | tuple[int, int], num_frames: int) -> None:
    """Record the size ``(H, W)`` (or one int) and frame count a model is trained for in its
    UNet config, so :func:`model_geometry`, and every pipeline saved from it, make that.
    ``H`` and ``W`` must be multiples of the VAE's scale factor."""
    h, w = (size, size) if isinstance(size, int) else size
    f = pipe.vae_scale_factor
    if h % f or w % f:
        raise ValueError(f"size {h}x{w} is not a multiple of the VAE's scale factor {f}")
    pipe.unet.register_to_config(sample_size=h // f if h == w else [h // f, w // f], num_frames=int(num_frames))


# ----------------------------------------------------------------------- reports

def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def component_report(pipe, dtype: torch.dtype = torch.float16, compare_svd_xt: bool = True) -> list[dict]:
    """Rows ``{component, parameters, bytes}`` for each model in ``pipe`` at ``dtype``.

    With ``compare_svd_xt`` the full-size SVD-xt UNet (diffusers' default config) is
    built on the meta device — no weights, no memory — and counted for comparison.
    """
    size = torch.finfo(dtype).bits // 8
    rows = []
    for name in ("unet", "vae", "image_encoder"):
        n = count_parameters(getattr(pipe, name))
        rows.append({"component": name, "parameters": n, "bytes": n * size})
    if compare_svd_xt:
        n = count_parameters(svd_xt_unet_on_meta())
        rows.append({"component": "SVD-xt unet (meta)", "parameters": n, "bytes": n * size})
    return rows


def example_unet_inputs(unet, frames: int = 4, seed: int = 0) -> dict:
    """Fixed random keyword inputs for ``unet(**inputs)``: ``sample`` ``(1, F, in_channels, h, w)``,
    ``timestep`` (c_noise = 0.3), ``encoder_hidden_states`` ``(1, 1, D)``, ``added_time_ids`` ``(1, 3)``.
    For comparing a UNet's output before and after a change (LoRA, adapters, merging)."""
    g = torch.Generator().manual_seed(seed)
    c = unet.config
    return {"sample": torch.randn(1, frames, c.in_channels, c.sample_size, c.sample_size, generator=g),
            "timestep": torch.tensor([0.3]),
            "encoder_hidden_states": torch.randn(1, 1, c.cross_attention_dim, generator=g),
            "added_time_ids": torch.tensor([[DEFAULT_FPS, DEFAULT_MOTION_BUCKET, 0.02]]), "return_dict": False}


@torch.no_grad()
def vae_reconstruct(vae, video: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Encode (posterior mode) and decode a clip ``(F, 3, H, W)`` in [-1, 1], ``chunk`` frames at a time."""
    out = []
    video = video.to(vae.device, vae.dtype)
    for i in range(0, len(video), chunk):
        part = video[i:i + chunk]
        z = vae.encode(part).latent_dist.mode()
        out.append(vae.decode(z, num_frames=len(part)).sample.float())
    return torch.cat(out)

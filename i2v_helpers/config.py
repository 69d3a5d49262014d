"""One fine-tuning run, described: :class:`TrainConfig` and how a YAML file and ``--set`` overrides make one.

    cfg = load_config("tiny-stage1", ["max_steps=200", "learning_rate=3e-4"])

Shipped configs live in ``i2v_helpers/configs/``. Unknown keys and values outside
:data:`ALLOWED_VALUES` are refused when the config is made (not an hour into training), with a
:class:`~i2v_helpers.errors.ConfigError` naming the key. Introduced in notebook 06.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .errors import ConfigError, ConfigNotFound
from .models import TINY_MODEL_DIR
from .objective import ObjectiveConfig

# mixed_precision → the dtype frozen weights are stored and computed in (trainable weights stay fp32)
PRECISION_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# TrainConfig field → the values the code that reads it accepts; anything else would fail late (after
# the model loads) or, worse, silently mean something else (cache: any typo used to mean in memory)
ALLOWED_VALUES = {
    "technique": ("lora", "full", "adapter"),  # techniques.apply_technique, checkpoints.save_result
    "mixed_precision": tuple(PRECISION_DTYPES),  # TrainConfig.weight_dtype
    "sampling": ("consecutive", "spread"),  # frames.sample_frame_indices, data.frames_needed, conditioning.clip_fps
    "cache": ("memory", "disk", "off"),  # encoded.EncodedClips (anything but disk and off: memory)
    # techniques.enable_checkpointing, estimate.estimate_memory; true and diffusers are the same
    "gradient_checkpointing": (False, True, "diffusers", "full"),
    "lora_blocks": ("all", "spatial", "temporal"),  # lora.attention_target_modules (on the loaded UNet)
    "adapter_blocks": ("all", "spatial", "temporal"),  # adapters.adapter_sites (on the loaded UNet)
}

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig(ObjectiveConfig):
    """Everything one fine-tuning run needs. The objective's settings (``p_mean``, ``p_std``, the noise
    augmentation, the CFG dropouts, ``loss``, ``weighting``, ``snr_gamma``) are inherited from
    :class:`~i2v_helpers.objective.ObjectiveConfig`, their one owner: a config YAML sets them by name."""

    # what to train
    init_from: str = TINY_MODEL_DIR
    technique: str = "lora"  # lora | full | adapter
    train_manifest: str = "data_samples/general/train.jsonl"
    val_manifest: str | None = "data_samples/general/val.jsonl"
    output_dir: str = "runs/stage1"
    max_steps: int = 300
    seed: int = 0
    # data
    num_frames: int = 16
    resolution: int | list[int] | None = None  # px, or [H, W]; default: the model's native size
    sampling: str = "consecutive"  # consecutive (stride apart) | spread (evenly over the clip)
    stride: int = 1
    batch_size: int = 4
    grad_accum: int = 1
    num_workers: int = 0
    max_train_samples: int | None = None  # use only the first N clips of each manifest (quick runs, debugging)
    max_val_samples: int | None = None
    # optimisation
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"  # any diffusers.optimization scheduler name
    lr_warmup_steps: int = 20
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool | str = False  # false | true (diffusers' blocks) | full (see enable_checkpointing)
    ema_decay: float | None = None
    # technique settings
    lora_rank: int = 16
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lora_blocks: str = "all"  # all | spatial | temporal
    lora_init: str | bool = True
    full_subset: str | None = None  # e.g. "temporal_transformer_block": only matching parameter names
    adapter_bottleneck: int = 16  # technique adapter: width of each bottleneck adapter
    adapter_blocks: str = "all"  # all | spatial | temporal transformer blocks
    # caching, validation, checkpoints, logging
    cache: str = "memory"  # memory | disk | off
    cache_dir: str | None = None  # default: output_dir/cache
    val_every: int = 100  # 0: no validation
    val_batches: int = 4
    val_images: list[str] = field(default_factory=list)
    val_video_steps: int = 25
    checkpoint_every: int = 100  # 0: no checkpoints
    keep_checkpoints: int | None = 2  # the newest N are kept; null: all
    log_every: int = 10  # 0: no loss logging (callbacks still get every step)
    report_to: str = "tensorboard"  # tensorboard | none

    def __post_init__(self):  # checked when the config is made, not an hour into training
        for name, allowed in ALLOWED_VALUES.items():
            check_allowed(name, getattr(self, name), allowed)
        try:
            super().__post_init__()  # the objective checks its own settings (loss, weighting)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name in ("val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1 (the newest N are kept) or null (all are kept), got "
                              f"{self.keep_checkpoints}; for no checkpoints at all set checkpoint_every=0")

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of frozen weights and autocast compute (``mixed_precision``)."""
        return PRECISION_DTYPES[self.mixed_precision]

    def objective(self) -> ObjectiveConfig:
        """The objective's settings alone (what ``objective.training_loss`` reads)."""
        return ObjectiveConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ObjectiveConfig)})


def check_allowed(name: str, value, allowed: tuple) -> None:
    """:class:`~i2v_helpers.errors.ConfigError` unless ``value`` is one of ``allowed``, of the same type:
    ``1`` is not ``true`` (``1 == True`` in Python, but ``enable_checkpointing`` would refuse it)."""
    if not any(type(value) is type(a) and value == a for a in allowed):
        spelled = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)  # as YAML writes them
        raise ConfigError(f"{name} must be one of {spelled}, got {value!r}")


def parse_overrides(items: list[str] | None) -> dict:
    """``["key=value", ...]`` (``--set``) → ``{key: value}``, values parsed as YAML."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def check_fields(cls, data: dict, where) -> dict:
    """``data`` with unknown keys of dataclass ``cls`` rejected and float fields made floats
    (YAML 1.1 reads ``1e-4``, without a dot, as a string). Used for TrainConfig and PretrainConfig."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown config keys {unknown}; known keys: {sorted(fields)}")
    data = dict(data)
    for k, v in data.items():
        if isinstance(v, (str, int)) and not isinstance(v, bool) and "float" in fields[k]:
            try:
                data[k] = float(v)
            except ValueError:
                raise ConfigError(f"{where}: {k} must be a number, got {v!r}") from None
    return data


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a shipped config name (``tiny-stage1``, ``svd-xt-lora``, ...)
    or a YAML file, then ``key=value`` overrides (values parsed as YAML: ``lr=3e-4``,
    ``val_images=[a.png,b.png]``)."""
    p = Path(name_or_path)
    if not p.is_file():
        p = CONFIG_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        names = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yaml")))
        raise ConfigNotFound(f"{name_or_path}: no such config file or shipped config (shipped: {names})")
    data = (yaml.safe_load(p.read_text()) or {}) | parse_overrides(overrides)
    data = check_fields(TrainConfig, data, p)
    if "adam_betas" in data:
        data["adam_betas"] = tuple(data["adam_betas"])
    return TrainConfig(**data)

"""The diffusion family: EDM-framework training (``genzoo train --family diffusion``) and sampling.

A model is a denoiser: a registered network (``--arch``) wrapped in a preconditioning (``--precond``).
Samplers are looked up by name in :data:`SAMPLERS`; other modules may add entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from genzoo import nets
from genzoo import validate as V
from genzoo.checkpoints.record import config_of
from genzoo.diffusion import adm, edm2
from genzoo.diffusion import samplers as S
from genzoo.diffusion.augment import AUGMENT_DIM, AugmentPipe
from genzoo.diffusion.discrete_denoiser import discrete_denoiser
from genzoo.diffusion.guidance import AutoGuidance, ClassifierFreeGuidance, parse_interval
from genzoo.diffusion.losses import LOSSES, DiffusionLoss, build_loss, drop_labels
from genzoo.diffusion.precond import DTYPES, PRECONDITIONINGS, Denoiser, build_denoiser
from genzoo.errors import UserError
from genzoo.family import Family
from genzoo.options import Options, option
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

DEFAULT_ARCH = "ddpmpp"
DEFAULT_LR = 1e-3  # EDM's CIFAR-10 setting
DEFAULT_WARMUP_IMAGES = 10_000  # EDM ramps up over 10M images; short CPU runs cannot wait that long
LOSS_FOR_PRECOND = {"vp": "vp", "ve": "ve", "iddpm": "edm", "edm": "edm", "edm2": "edm2"}
PRECOND_FOR_ARCH = {"edm2": "edm2"}  # an arch's own preconditioning; else edm


# ------------------------------------------------------------------------------------------------ networks

def _ddpmpp_kwargs(config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    res = base["resolution"]
    mult = config.get("channel_mult") or ("1,2" if res <= 8 else "1,2,2")
    attn = config.get("attn_res")
    return dict(base, model_channels=int(config.get("model_channels") or (32 if res <= 16 else 64)),
                channel_mult=[int(m) for m in str(mult).split(",")],
                num_blocks=int(config.get("num_blocks") or 2),
                attn_resolutions=([int(r) for r in str(attn).split(",") if r.strip() not in ("", "none")]
                                  if attn is not None
                                  else [res // 2]),
                dropout=float(config.get("dropout") or 0.0),
                **({"adaptive_scale": True} if config.get("adaptive_scale") else {}))


def _edm_net_kwargs(config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """EDM's SongUNet / DhariwalUNet (official argument names) from the same flags as ddpmpp."""
    if config.get("adaptive_scale"):
        raise UserError(f"--adaptive-scale: only for --arch ddpmpp ({config.get('arch')} fixes it)")
    flags = _ddpmpp_kwargs(config, base)
    shared = ("model_channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout")
    return dict(img_resolution=base["resolution"], in_channels=base["in_channels"],
                out_channels=base["out_channels"], label_dim=base["label_dim"],
                augment_dim=base["augment_dim"], **{k: flags[k] for k in shared})


def _edm2_net_kwargs(config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """EDM2's UNet (official argument names) from the same flags as ddpmpp; it has no augmentation input."""
    if base.get("augment_dim"):
        raise UserError("--augment: the EDM2 UNet has no augmentation input; train it with --augment 0")
    if config.get("adaptive_scale"):
        raise UserError("--adaptive-scale: only for --arch ddpmpp (the EDM2 UNet scales by its embedding)")
    flags = _ddpmpp_kwargs(config, base)
    shared = ("model_channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout")
    return dict(img_resolution=base["resolution"], img_channels=base["in_channels"],
                label_dim=base["label_dim"], **{k: flags[k] for k in shared})


#: arch name -> function(config, base kwargs) -> the network's constructor kwargs. ``base`` holds
#: resolution, in_channels, out_channels, label_dim, augment_dim; an arch without an entry gets ``base``.
ARCH_KWARGS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "ddpmpp": _ddpmpp_kwargs,
    "songunet": _edm_net_kwargs,
    "dhariwalunet": _edm_net_kwargs,
    "edm2": _edm2_net_kwargs,
}


def network_config(config: dict[str, Any], dataset: Any) -> tuple[str, dict[str, Any]]:
    """(arch, network kwargs) for a run: explicit ``config["net"]`` wins, else the arch's defaults."""
    arch = config.get("arch") or DEFAULT_ARCH
    if config.get("net"):
        return arch, dict(config["net"])
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    channels = int(getattr(dataset, "num_channels", 3))
    base = dict(resolution=int(dataset.resolution), in_channels=channels, out_channels=channels,
                label_dim=0 if config.get("uncond") else num_classes,
                augment_dim=AUGMENT_DIM if float(config.get("augment") or 0) > 0 else 0)
    return arch, ARCH_KWARGS.get(arch, lambda _c, b: b)(config, base)


#: archs whose network kwargs the shared network flags fill with the same names (``_ddpmpp_kwargs``)
_FLAG_ARCHES = ("ddpmpp", "songunet", "dhariwalunet", "edm2")


def network_flags(arch: str, net: dict[str, Any]) -> dict[str, Any]:
    """The network flags (``--model-channels``, ``--channel-mult``, ``--num-blocks``, ``--attn-res``,
    ``--dropout``, ``--adaptive-scale``) with the values that built ``net``: what config.json records of a
    run's network; {} for a network they do not describe."""
    if arch == "adm" and "num_channels" in net:
        flags = {"model_channels": int(net["num_channels"]), "num_blocks": int(net["num_res_blocks"]),
                 "channel_mult": str(net["channel_mult"]), "attn_res": str(net["attention_resolutions"]),
                 "dropout": float(net["dropout"])}
        return {k: v for k, v in flags.items() if v != ""}  # "": ADM's own default for the image size
    if arch not in _FLAG_ARCHES or "model_channels" not in net:
        return {}
    flags = {"model_channels": int(net["model_channels"]),
             "channel_mult": ",".join(str(m) for m in net["channel_mult"]),
             "num_blocks": int(net["num_blocks"]),
             "attn_res": ",".join(str(r) for r in net["attn_resolutions"]),
             "dropout": float(net["dropout"])}
    if arch == "ddpmpp":
        flags["adaptive_scale"] = bool(net.get("adaptive_scale", False))
    return flags


def record_network(config: dict[str, Any], from_flags: bool) -> dict[str, Any]:
    """``config`` with the network flags as the network was built: from the flags (``from_flags``: their
    defaults resolved, plus ``--uncond``) or from another model (a teacher: the flags do not apply, only
    the network's values are recorded)."""
    record = {k: v for k, v in config.items() if k not in NetworkOptions.names()}
    if from_flags:
        record.update({k: config[k] for k in NetworkOptions.names() if k in config})
        record["uncond"] = bool(config.get("uncond"))
    record.update(network_flags(str(config.get("arch")), dict(config.get("net") or {})))
    return record


def build_diffusion_model(config: dict[str, Any]) -> Denoiser:
    """The denoiser a config describes: ``nets.build(arch, **net)`` inside ``config["precond"]``."""
    if not config.get("arch") or "net" not in config:
        raise UserError("config.json: a diffusion model needs 'arch' and 'net' entries")
    precond = config.get("precond") or "edm"
    network = nets.build(config["arch"], **config["net"])
    if precond == "iddpm" and config.get("discrete"):  # ADM/iDDPM: iDDPM precond on the own schedule
        return discrete_denoiser(network, config["discrete"])
    denoiser = build_denoiser(precond, network, **(config.get("precond_kwargs") or {}))
    for name in ("sigma_min", "sigma_max"):  # an imported model's range, as its own code computed it
        if config.get(name) is not None:
            setattr(denoiser, name, float(config[name]))
    denoiser.fp16_on_cuda = bool(config.get("fp16_on_cuda", False))
    if config.get("net_dtype"):
        if config["net_dtype"] not in DTYPES:
            raise UserError(f"config.json: net_dtype must be one of {', '.join(DTYPES)}, got "
                            f"{config['net_dtype']!r}")
        denoiser.net_dtype = DTYPES[config["net_dtype"]]
    return denoiser


# ------------------------------------------------------------------------------------------------ training

class DiffusionObjective(Objective):
    """One player, the denoiser; the loss is the mean of λ(σ)·‖D(y + σn; σ) − y‖² over elements."""

    ema_players = ("net",)
    sampled_player = "net"

    def __init__(self, denoiser: Denoiser, loss: DiffusionLoss, lr: float = DEFAULT_LR,
                 warmup_images: float = DEFAULT_WARMUP_IMAGES, label_dropout: float = 0.0,
                 augment_pipe: AugmentPipe | None = None, decay_images: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999)):
        super().__init__()
        self.players = nn.ModuleDict({"net": denoiser})
        self.loss_fn, self.lr, self.warmup_images = loss, float(lr), float(warmup_images)
        self.decay_images, self.betas = float(decay_images), tuple(betas)
        self.label_dropout, self.augment_pipe = float(label_dropout), augment_pipe

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        spec = OptimizerSpec(lr=self.lr, betas=self.betas, eps=1e-8, warmup_images=self.warmup_images,
                             decay_images=self.decay_images)
        return {"net": spec}

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        denoiser = self.players["net"]
        labels = None
        if denoiser.label_dim:
            labels = drop_labels(batch.labels, self.label_dropout, denoiser.label_dim, batch.rng)
        per_element = self.loss_fn(denoiser, batch.images, labels, self.augment_pipe, batch.rng)
        loss = per_element.mean()
        return StepResult(loss, {"loss": float(loss.detach())})


# ------------------------------------------------------------------------------------------------ sampling

def _grid(options: DiffusionSampleOptions) -> dict[str, Any]:
    return dict(num_steps=options.steps or S.NUM_STEPS, sigma_min=options.sigma_min,
                sigma_max=options.sigma_max, rho=float(options.rho), discretization=options.discretization)


def _churn(options: DiffusionSampleOptions) -> dict[str, Any]:
    return dict(S_churn=float(options.churn), S_min=float(options.s_min), S_max=float(options.s_max),
                S_noise=float(options.s_noise))


def _heun(net, latents, labels, randn_like, options: DiffusionSampleOptions):
    plain = options.discretization == "edm" and options.schedule == "linear" and options.scaling == "none"
    if plain:  # EDM's sampler with its reference defaults (σ_min 0.002, σ_max 80)
        lo = S.EDM_SIGMA_MIN if options.sigma_min is None else options.sigma_min
        hi = S.EDM_SIGMA_MAX if options.sigma_max is None else options.sigma_max
        return S.edm_sampler(net, latents, labels, num_steps=options.steps or S.NUM_STEPS,
                             sigma_min=float(lo), sigma_max=float(hi), rho=float(options.rho),
                             randn_like=randn_like, **_churn(options))
    return _ablation("heun")(net, latents, labels, randn_like, options)


def _ablation(solver: str):
    def run(net, latents, labels, randn_like, options: DiffusionSampleOptions):
        return S.ablation_sampler(net, latents, labels, solver=solver, schedule=options.schedule,
                                  scaling=options.scaling, randn_like=randn_like,
                                  **_grid(options), **_churn(options))
    return run


def _ddim(net, latents, labels, randn_like, options: DiffusionSampleOptions):
    return S.ddim_sampler(net, latents, labels, eta=float(options.eta), randn_like=randn_like,
                          **_grid(options))


def _ddpm(net, latents, labels, randn_like, options: DiffusionSampleOptions):
    return S.ddpm_sampler(net, latents, labels, randn_like=randn_like, **_grid(options))


def _dpmpp2m(net, latents, labels, randn_like, options: DiffusionSampleOptions):
    return S.dpmpp_2m_sampler(net, latents, labels, randn_like=randn_like, **_grid(options))


#: sampler name -> function(denoiser, latents, class_labels, randn_like, options) -> float64 images.
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "heun": _heun, "euler": _ablation("euler"), "ddim": _ddim, "ddpm": _ddpm, "dpmpp2m": _dpmpp2m,
}
# ADM / iDDPM (genzoo.diffusion.adm): samplers adm-ddpm and adm-ddim, --arch adm (its losses are in LOSSES)
SAMPLERS.update(adm.SAMPLERS)
ARCH_KWARGS.update(adm.ARCH_KWARGS)


@dataclass(frozen=True)
class DiffusionSampleOptions(Options):
    """``genzoo sample`` options of a diffusion model (any denoiser, EDM, EDM2 or ADM/iDDPM)."""

    family: ClassVar[str] = "diffusion"

    sampler: str = option("heun", help="diffusion sampler (heun = EDM's)", choices=tuple(SAMPLERS))
    steps: int | None = option(None, V.positive_int,
                               f"sampling steps (default {S.NUM_STEPS}; adm-ddpm/adm-ddim: the model's "
                               "respacing, else 250 / ddim25)")
    churn: float = option(0.0, V.nonnegative_float, "EDM S_churn (0 = deterministic)")
    s_min: float = option(0.0, V.nonnegative_float, "EDM S_min")
    s_max: float = option(float("inf"), V.finite_float(0, allow_inf=True), "EDM S_max")
    s_noise: float = option(1.0, V.positive_float, "EDM S_noise")
    sigma_min: float | None = option(None, V.positive_float,
                                     f"lowest noise level (default {S.EDM_SIGMA_MIN} for heun, else the "
                                     "discretisation's, within the model's range)")
    sigma_max: float | None = option(None, V.positive_float,
                                     f"highest noise level (default {S.EDM_SIGMA_MAX:g} for heun, else the "
                                     "discretisation's, within the model's range)")
    rho: float = option(7.0, V.positive_float, "ρ of the EDM time discretisation")
    discretization: str = option("edm", help="time steps", choices=S.DISCRETIZATIONS)
    schedule: str = option("linear", help="σ(t)", choices=S.SCHEDULES)
    scaling: str = option("none", help="s(t)", choices=S.SCALINGS)
    eta: float = option(0.0, V.nonnegative_float, "DDIM stochasticity η")
    guidance: float = option(1.0, V.any_float,
                             "guidance scale w (1 = off): classifier-free, or autoguidance with "
                             "--guide-model")
    guide_model: Any = option(None, None,
                              "autoguidance: the guiding denoiser (a run, checkpoint or model directory; the "
                              "API loads it), a smaller or less-trained model of the same kind: "
                              "D = D_guide + w·(D − D_guide)", loads="denoiser")
    guidance_interval: str | None = option(None, None, "guide only for SIGMA_LO < σ <= SIGMA_HI; one "
                                                       "network evaluation per step outside",
                                           metavar="SIGMA_LO,SIGMA_HI")
    vae: str | None = option(None, None, "latent EDM2 models: local folder of the Stable Diffusion VAE "
                                         "(diffusers AutoencoderKL) that decodes the samples")
    precision: str = option("fp32", help="bf16 autocast while sampling", choices=("fp32", "bf16"))
    classifier: Any = option(None, None, "noise-aware classifier (a model directory; the API loads it) for "
                                         "ADM classifier guidance (any diffusion sampler)",
                             loads="classifier")
    classifier_scale: float | None = option(None, V.any_float,
                                            "classifier guidance scale s (default: the converted model's "
                                            "README value, else 1)")
    respacing: str | None = option(None, None, "adm-ddpm/adm-ddim steps in the public syntax: 250, ddim25, "
                                               "10,10,10 (default --steps, else 250 / ddim25)")
    low_res: str | None = option(None, None, "super-resolution models: .npz of base samples (arr_0 uint8 "
                                             "NHWC, arr_1 labels); seed s upsamples image s")
    no_clip: bool = option(False, help="adm-ddpm/adm-ddim: do not clip the predicted x0 to [-1, 1]",
                           kind="switch")

    def __post_init__(self) -> None:
        lo, hi = self.sigma_min, self.sigma_max
        if lo is not None and hi is not None and lo >= hi:
            raise UserError(f"--sigma-min {lo:g} --sigma-max {hi:g}: expected --sigma-min below --sigma-max")


@dataclass(frozen=True)
class NetworkOptions(Options):
    """The network flags of a denoiser trained from scratch (diffusion, and consistency without teacher)."""

    model_channels: int | None = option(None, V.positive_int,
                                        "ddpmpp, songunet, dhariwalunet, adm: base channels (default 32 at "
                                        "≤16 px, else 64)")
    channel_mult: str | None = option(None, V.int_list(1),
                                      "channel multipliers per level, e.g. 1,2,2 (default 1,2 at ≤8 px, else "
                                      "1,2,2)")
    num_blocks: int | None = option(None, V.positive_int, "residual blocks per level (default 2)")
    attn_res: str | None = option(None, V.int_list(1, allow_empty=True, words=("none",)),
                                  "resolutions with self-attention, e.g. 16 (default res/2)")
    dropout: float | None = option(None, V.finite_float(0, 1, hi_open=True),
                                   "dropout probability (default 0)")
    adaptive_scale: bool | None = option(None, help="ddpmpp: the embedding scales and shifts each block's "
                                                    "normalised features (ADM's scale-shift norm) instead of "
                                                    "adding a bias before the norm", kind="switch")
    uncond: bool | None = option(None, help="ignore the data's class labels", kind="switch")
    augment: float | None = option(None, V.probability,
                                   "EDM non-leaking augmentation probability P (default 0 = off; EDM "
                                   "CIFAR-10 "
                                   "0.12)")


@dataclass(frozen=True)
class DiscreteProcessOptions(Options):
    """The discrete (ADM/iDDPM) process a network is trained on."""

    diffusion_steps: int | None = option(None, V.positive_int,
                                         "discrete process steps T (--family classifier; --arch adm "
                                         "--precond "
                                         "iddpm); default 1000")
    noise_schedule: str | None = option(None, help="discrete β schedule (default: linear for the classifier, "
                                                   "cosine for --arch adm)", choices=("linear", "cosine"))


@dataclass(frozen=True)
class DiffusionTrainOptions(NetworkOptions, DiscreteProcessOptions):
    """``genzoo train --family diffusion`` options (the engine's --lr, --batch, ... are shared)."""

    family: ClassVar[str] = "diffusion"

    precond: str | None = option(None, help="preconditioning of EDM Table 1 (default edm; edm2 for --arch "
                                            "edm2)", choices=tuple(PRECONDITIONINGS))
    loss: str | None = option(None, help="training loss (default: the preconditioning's; edm for iddpm)",
                              choices=tuple(sorted(LOSSES)))
    label_dropout: float | None = option(None, V.probability,
                                         "probability of training on the null label, for classifier-free "
                                         "guidance (default 0.1 for class-conditional data)")
    p_mean: float | None = option(None, V.any_float, "EDM/EDM2 loss: mean of ln σ during training (default "
                                                     "−1.2, EDM Table 1; edm2 −0.8)")
    p_std: float | None = option(None, V.positive_float, "EDM/EDM2 loss: standard deviation of ln σ during "
                                                         "training (default 1.2; edm2 1.6)")
    lr_ref: float | None = option(None, V.positive_float,
                                  "α_ref of the inverse square-root schedule α_ref/√max(t/t_ref, 1) of EDM2; "
                                  f"the same setting as --lr (default {edm2.DEFAULT_LR_REF} for --arch edm2)")
    decay_kimg: float | None = option(None, V.nonnegative_float,
                                      "t_ref of that schedule in thousands of images; 0 = constant (default "
                                      f"0; --arch edm2 {edm2.DEFAULT_DECAY_KIMG:g}, EDM2's 35k batches of "
                                      "2048)")


def sample_denoiser(denoiser: Any, rng: StackedRandomGenerator, class_labels: torch.Tensor | None,
                    options: DiffusionSampleOptions | dict[str, Any], shape: tuple[int, ...],
                    clamp: bool = True) -> tuple[torch.Tensor, int]:
    """Images (float32, clamped to [-1, 1] unless ``clamp`` is False, e.g. for latents) and NFE per image
    from any denoiser with the sample options."""
    options = FAMILY.sample_options(denoiser, options)
    name = options.sampler
    if name not in SAMPLERS:
        raise UserError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {name!r}")
    if not int(getattr(denoiser, "label_dim", 0) or 0):
        class_labels = None
    main = S.NFECounter(denoiser, images=len(rng))  # counts what is evaluated, guided or not
    guide = options.get("guide_model")
    guide = S.NFECounter(check_guide(denoiser, guide), images=len(rng)) if guide is not None else None
    net = guided_denoiser(main, guide, class_labels, options)
    net = adm.with_classifier_guidance(net, denoiser, options, rng)  # --classifier PATH
    latents = rng.randn([len(rng), *shape])
    with torch.autocast(device_type=rng.device.type, dtype=torch.bfloat16,
                        enabled=options.precision == "bf16"):
        images = SAMPLERS[name](net, latents, class_labels, rng.randn_like, options)
    images = images.to(torch.float32)
    nfe = main.nfe + (guide.nfe if guide is not None else 0)
    return (images.clamp(-1, 1) if clamp else images), nfe


def guided_denoiser(denoiser: Any, guide: Any, class_labels: torch.Tensor | None, options: dict[str, Any],
                    prefix: str = "--") -> Any:
    """``denoiser`` under ``--guidance W``: autoguidance by ``guide`` (a denoiser, from ``--guide-model``)
    when given, else classifier-free guidance; ``--guidance-interval LO,HI`` limits it to those σ."""
    guidance = 1.0 if options.get("guidance") is None else float(options["guidance"])
    interval = parse_interval(options.get("guidance_interval"), f"{prefix}guidance-interval")
    if guidance == 1.0:
        for key in ("guide_model", "guidance_interval"):
            if options.get(key) is not None:
                flag = prefix + key.replace("_", "-")
                raise UserError(f"{flag}: needs {prefix}guidance W with W != 1 (1 = no guidance)")
        return denoiser
    if guide is not None:
        return AutoGuidance(denoiser, guide, guidance, interval)
    if class_labels is None:
        raise UserError(f"{prefix}guidance: classifier-free guidance needs a class-conditional model; give "
                        f"{prefix}guide-model PATH for autoguidance")
    if not getattr(denoiser, "takes_null_label", True):
        raise UserError(f"{prefix}guidance: classifier-free guidance needs a model trained with a null label "
                        f"(label dropout); this one has {denoiser.label_dim} classes and no null label (as "
                        f"released ADM checkpoints); give {prefix}guide-model PATH to guide by another model")
    return ClassifierFreeGuidance(denoiser, guidance, interval=interval)


def check_guide(denoiser: Any, guide: Any, flag: str = "--guide-model") -> Any:
    """The guide model of autoguidance must be a denoiser for the same images and conditioning."""
    if not S.is_denoiser(guide):
        family = config_of(guide).get("family")
        raise UserError(f"{flag}: expected a diffusion model (a denoiser), got "
                        f"{family or type(guide).__name__}")
    for name in ("label_dim", "img_channels", "img_resolution", "resolution", "sigma_data"):
        ours, theirs = getattr(denoiser, name, None), getattr(guide, name, None)
        if name == "label_dim" and theirs == 0:
            continue  # an unconditional guide: classifier-free guidance by a separate model (EDM2's presets)
        if ours is not None and theirs is not None and float(ours) != float(theirs):
            raise UserError(f"{flag}: the guide's {name} is {theirs}, the model's {ours}; autoguidance "
                            "needs a denoiser of the same kind (same data, resolution and conditioning)")
    return guide


def _edm_loss_kwargs(config: dict[str, Any], denoiser: Denoiser) -> dict[str, Any]:
    """σ_data from the denoiser; P_mean and P_std from --p-mean / --p-std when given (EDM: −1.2, 1.2;
    EDM2: filled in by :func:`edm2.resolve_training`)."""
    kwargs: dict[str, Any] = {"sigma_data": denoiser.sigma_data}
    for key, name in (("p_mean", "P_mean"), ("p_std", "P_std")):
        if config.get(key) is not None:
            kwargs[name] = float(config[key])
    return kwargs


class DiffusionFamily(Family):
    name = "diffusion"
    SampleOptions = DiffusionSampleOptions
    TrainOptions = DiffusionTrainOptions

    def build_objective(self, config: dict[str, Any], dataset: Any) -> DiffusionObjective:
        arch = config.get("arch") or DEFAULT_ARCH
        precond = config.get("precond") or PRECOND_FOR_ARCH.get(arch, "edm")
        if precond not in PRECONDITIONINGS:
            raise UserError(f"--precond: expected one of {', '.join(PRECONDITIONINGS)}, got {precond!r}")
        arch, net_config = network_config(config, dataset)
        label_dim = int(net_config.get("label_dim", 0) or 0)
        label_dropout = config.get("label_dropout")
        label_dropout = (0.1 if label_dim else 0.0) if label_dropout is None else float(label_dropout)
        augment = float(config.get("augment") or 0.0)
        loss_name = config.get("loss") or LOSS_FOR_PRECOND[precond]
        edm2.resolve_training(config, arch, precond, loss_name, DEFAULT_LR)
        config.update(arch=arch, net=net_config, precond=precond, loss=loss_name,
                      label_dropout=label_dropout, augment=augment)
        if precond == "edm2" and not config.get("precond_kwargs"):
            config["precond_kwargs"] = {"logvar_channels": edm2.LOGVAR_CHANNELS}
        denoiser = build_diffusion_model(config)
        loss_kwargs = _edm_loss_kwargs(config, denoiser) if loss_name in ("edm", "edm2") else {}
        loss = build_loss(loss_name, **loss_kwargs)
        if loss_name in ("edm", "edm2"):  # config.json records the σ distribution trained on
            config.update(p_mean=float(loss.P_mean), p_std=float(loss.P_std))
        return DiffusionObjective(denoiser, loss, lr=config["lr"],
                                  label_dropout=label_dropout,
                                  augment_pipe=AugmentPipe(p=augment) if augment > 0 else None,
                                  decay_images=config["decay_kimg"] * 1000,
                                  betas=edm2.ADAM_BETAS if arch == "edm2" else (0.9, 0.999))

    def record_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The network flags as applied; ``--diffusion-steps`` / ``--noise-schedule`` of the discrete
        process (``--precond iddpm``), left out of a continuous (EDM) run."""
        record = record_network(config, from_flags=True)
        discrete = config.get("discrete") or {}
        record.update(diffusion_steps=discrete.get("steps"), noise_schedule=discrete.get("noise_schedule"))
        return record

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        return build_diffusion_model(config)

    def labels_for(self, model: nn.Module, seeds: list[int], options: dict[str, Any]) -> list[int] | None:
        """A class-conditional super-resolution model upsamples base sample s with its label (``arr_1`` of
        ``--low-res``), as the public script does; those are the labels the samples are recorded with."""
        path = options.get("low_res")
        net = getattr(model, "model", None)
        if not path or not getattr(net, "small_size", None) or not getattr(model, "label_dim", 0):
            return None
        from genzoo.metrics.reference import npz_labels

        labels = npz_labels(path)
        if labels is None:
            return None
        if max(seeds) >= len(labels):
            raise UserError(f"--low-res {path}: {len(labels)} labels, but seed {max(seeds)} asks for image "
                            f"{max(seeds)}")
        return [int(labels[s]) for s in seeds]

    @torch.no_grad()
    def sample(self, model: nn.Module, rng: StackedRandomGenerator, class_labels: torch.Tensor | None,
               options: DiffusionSampleOptions | dict[str, Any]) -> tuple[torch.Tensor, int]:
        options = self.sample_options(model, options)
        config = config_of(model)
        net = getattr(model, "model", model)
        resolution = int(config.get("resolution") or net.resolution)
        channels = int(config.get("channels") or getattr(net, "in_channels", 3))
        encoder = edm2.model_encoder(model, config)
        edm2.prepare_encoder(encoder, options, rng.device)
        shape = (channels, resolution, resolution)
        images, nfe = sample_denoiser(model, rng, class_labels, options, shape, clamp=encoder is None)
        return (edm2.decode(encoder, images) if encoder is not None else images), nfe


FAMILY = DiffusionFamily()

"""The consistency family: `genzoo train --family consistency --mode {cd,ct,ict,ect,scm}` and its sampling.

config.json keys of a consistency model: ``arch``, ``net`` (the network), ``sigma_min``, ``sigma_max``,
``sigma_data``, ``rho``, ``time_scale`` (c_noise = time_scale·ln σ), ``num_scales`` (the grid size
``--ts`` indexes by default), and the training settings ``mode``, ``teacher``, ``s0``, ``s1``, ``mu0``,
``distance`` (with ``lpips_size``/``lpips_mix``), ``init`` and ``ect_stages``/``ect_q`` (ECT).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from genzoo import nets
from genzoo import validate as V
from genzoo.checkpoints.record import config_of, record_of
from genzoo.consistency.distances import DISTANCES
from genzoo.consistency.model import RHO, SIGMA_DATA, SIGMA_MAX, SIGMA_MIN, ConsistencyModel
from genzoo.consistency.objective import (
    ADAPTIVE_MAX,
    CD_TARGETS,
    ECT_WEIGHTINGS,
    LOGNORMAL_MODES,
    MODES,
    SOLVERS,
    ConsistencyObjective,
)
from genzoo.consistency.sampling import parse_sigmas, parse_ts, sample
from genzoo.diffusion.family import NetworkOptions, record_network
from genzoo.diffusion.samplers import is_denoiser
from genzoo.errors import UserError
from genzoo.family import Family, load_model
from genzoo.nets.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from genzoo.options import Options, option
from genzoo.seeds import StackedRandomGenerator, labels_for_seeds, seeds_text

DEFAULT_LR = 1e-4
#: the CD grid size (Consistency Models: N = 18 on CIFAR-10, 40 on ImageNet-64 and LSUN)
DEFAULT_NUM_SCALES = 18
#: the adversarial term's discriminator (``--gan-weight``): width, lr and R1 weight (StyleGAN2-style)
DEFAULT_D_CH, DEFAULT_D_LR, DEFAULT_R1_GAMMA = 32, 2e-3, 0.1
#: ``--cd-targets trajectory``: teacher trajectories kept, and replaced per training step
DEFAULT_TRAJECTORY_POOL, DEFAULT_TRAJECTORY_REFRESH = 1024, 1


def _model_kwargs(config: dict[str, Any]) -> dict[str, float]:
    def get(key: str, default: float) -> float:
        return float(default if config.get(key) is None else config[key])

    return {"sigma_min": get("sigma_min", SIGMA_MIN), "sigma_max": get("sigma_max", SIGMA_MAX),
            "sigma_data": get("sigma_data", SIGMA_DATA), "time_scale": get("time_scale", 0.25),
            "rho": get("rho", RHO)}


def _load_teacher(path: str, flag: str = "--teacher") -> nn.Module:
    try:
        teacher = load_model(path)
    except UserError as err:
        if flag == "--teacher":
            raise
        raise UserError(f"{flag}: {err}") from None
    if not is_denoiser(teacher):
        raise UserError(f"{flag} {path}: expected a diffusion model (a denoiser), got a "
                        f"{record_of(teacher).family} model")
    return teacher


def _fresh_network(config: dict[str, Any], dataset: Any) -> tuple[str, dict[str, Any]]:
    """(arch, net config) of a student trained without a teacher: the diffusion family's network choice
    (``--arch``, ``--model-channels``, ``--dropout``, ...; iCT used dropout 0.3 on CIFAR-10)."""
    from genzoo.diffusion.family import network_config

    return network_config(config, dataset)


def _guided_teacher(teacher: nn.Module, config: dict[str, Any], path: str) -> nn.Module:
    """The teacher guided at ``--teacher-guidance`` w (unchanged for w = 1): autoguidance by
    ``--teacher-guide-model`` when given, else classifier-free guidance; ``--teacher-guidance-interval``
    limits it to an interval of σ. The same wrappers as ``genzoo sample --guidance``."""
    from genzoo.diffusion.family import check_guide, guided_denoiser

    guide_path = config.get("teacher_guide_model")
    guide = None
    if guide_path and float(config.get("teacher_guidance") or 1.0) != 1.0:
        guide = check_guide(teacher, _load_teacher(guide_path, "--teacher-guide-model"),
                            "--teacher-guide-model")
    options = {"guidance": config.get("teacher_guidance"), "guide_model": guide_path,
               "guidance_interval": config.get("teacher_guidance_interval")}
    if guide is None and not int(getattr(teacher, "label_dim", 0) or 0) and \
            float(options["guidance"] or 1.0) != 1.0:
        raise UserError(f"--teacher-guidance: the teacher {path} is not class-conditional; classifier-free "
                        "guidance needs class labels (or give --teacher-guide-model for autoguidance)")
    labels = torch.zeros(1) if int(getattr(teacher, "label_dim", 0) or 0) else None
    return guided_denoiser(teacher, guide, labels, options, prefix="--teacher-")


def _adversarial(config: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """The discriminator and its settings for ``--gan-weight`` (resolved into ``config`` for resuming)."""
    weight = float(config.get("gan_weight") or 0.0)
    if weight <= 0:
        if config.get("gan_adaptive_max") is not None:
            raise UserError("--gan-adaptive-max: bounds the adversarial term's weight; give --gan-weight "
                            "λ > 0")
        return {}
    for key, default in (("d_ch", DEFAULT_D_CH), ("d_lr", DEFAULT_D_LR), ("r1_gamma", DEFAULT_R1_GAMMA),
                         ("gan_adaptive_max", ADAPTIVE_MAX)):
        if config.get(key) is None:
            config[key] = default
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    channels = int(getattr(dataset, "num_channels", 3))
    D = nets.build("biggan-d", resolution=int(dataset.resolution), channels=channels,
                   ch=int(config["d_ch"]), num_classes=max(num_classes, 1), attn_res=[])
    return dict(discriminator=D, gan_weight=weight, d_lr=float(config["d_lr"]),
                r1_gamma=float(config["r1_gamma"]), adaptive_max=float(config["gan_adaptive_max"]))


def _trajectory_targets(config: dict[str, Any], mode: str) -> dict[str, Any]:
    """``--cd-targets`` and its pool settings (resolved into ``config`` for resuming)."""
    targets = config.get("cd_targets") or "step"
    if targets != "trajectory":
        return {"cd_targets": targets}
    for key, default in (("trajectory_pool", DEFAULT_TRAJECTORY_POOL),
                         ("trajectory_refresh", DEFAULT_TRAJECTORY_REFRESH)):
        if config.get(key) is None:
            config[key] = default
    config["cd_targets"] = targets
    return dict(cd_targets=targets, trajectory_pool=int(config["trajectory_pool"]),
                trajectory_refresh=int(config["trajectory_refresh"]))


def _student_class(mode: str | None) -> type[ConsistencyModel]:
    """sCM students are TrigFlow models (EDM's preconditioning, an adaptive weight); others CM's scalings."""
    if mode == "scm":
        from genzoo.consistency.trigflow import TrigFlowModel

        return TrigFlowModel
    return ConsistencyModel


def _tangent_warmup(config: dict[str, Any], mode: str, steps: int) -> int:
    """``--tangent-warmup`` steps (sCM; default a tenth of the run), resolved into ``config``."""
    if mode != "scm":
        if config.get("tangent_warmup") is not None:
            raise UserError("--tangent-warmup: only --mode scm has a tangent warm-up")
        return 0
    if config.get("tangent_warmup") is None:
        config["tangent_warmup"] = max(steps, 0) // 10
    if int(config["tangent_warmup"]) < 0:
        raise UserError(f"--tangent-warmup: expected a number of steps >= 0, got {config['tangent_warmup']}")
    return int(config["tangent_warmup"])


def _set_dropout(network: nn.Module, net_config: dict[str, Any], p: float, source: str) -> None:
    """``--dropout P`` on a student copied from a diffusion model (ECT's CIFAR-10 tuning used 0.2): every
    dropout of the network and its recorded config set to P."""
    if "dropout" not in net_config:
        raise UserError(f"--dropout: the network of {source} has no dropout setting")
    for module in network.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = p
    net_config["dropout"] = p


def _ect_options(config: dict[str, Any], mode: str) -> dict[str, Any]:
    """``--ect-stages``/``--ect-q``/``--ect-weighting`` (resolved into ``config`` for resuming); none outside
    ECT."""
    if mode != "ect":
        for key in ("ect_stages", "ect_q", "ect_weighting"):
            if config.get(key) is not None:
                raise UserError(f"--{key.replace('_', '-')}: only --mode ect has a Δt curriculum")
        return {}
    from genzoo.consistency.schedules import ECT_Q, ECT_STAGES

    config["ect_stages"] = int(config.get("ect_stages") or ECT_STAGES)
    config["ect_q"] = float(config.get("ect_q") or ECT_Q)
    config["ect_weighting"] = config.get("ect_weighting") or "dt"
    return {key: config[key] for key in ("ect_stages", "ect_q", "ect_weighting")}


@dataclass(frozen=True)
class ConsistencyTrainOptions(NetworkOptions):
    """``genzoo train --family consistency`` options; without a teacher the student's network takes the
    diffusion family's network options (iCT used dropout 0.3 on CIFAR-10)."""

    family: ClassVar[str] = "consistency"

    mode: str | None = option(None, help="cd: distil a diffusion teacher; ct: consistency training; ict: "
                                         "improved CT; ect: easy consistency tuning of a diffusion model "
                                         "(--init RUN), or ECT's schedule distilling --teacher (the point "
                                         "at r is a step of its ODE); scm: continuous-time consistency "
                                         "(TrigFlow), distilled from --teacher or trained from data, "
                                         "optionally starting from --init (default cd with --teacher, else "
                                         "ict)", choices=MODES)
    init: str | None = option(None, None, "ECT/sCM: the diffusion model (run, checkpoint or model directory) "
                                          "the student starts from (default --teacher)")
    ect_stages: int | None = option(None, V.positive_int,
                                    "ECT: stages of the shrinking-Δt curriculum over the run (default 8; "
                                    "stage 0 is diffusion training, each later stage divides Δt by --ect-q)")
    ect_q: float | None = option(None, V.finite_float(1, lo_open=True),
                                 "ECT: Δt shrink factor per stage (default 2)")
    ect_weighting: str | None = option(None, help="ECT: loss weighting, dt = 1/(t − r) (default; ECT's "
                                                  "CIFAR-10 runs) or snr = SNR(t) + 1/σ_d² = "
                                                  "(t² + σ_d²)/(t·σ_d)² (its ImageNet-64 runs)",
                                       choices=ECT_WEIGHTINGS)
    p_mean: float | None = option(None, V.any_float,
                                  "iCT, ECT and sCM: mean P_mean of ln σ of the training noise levels "
                                  "(default iCT/ECT −1.1; sCM −1.0, distilling −0.8)")
    p_std: float | None = option(None, V.positive_float,
                                 "iCT, ECT and sCM: standard deviation P_std of ln σ (default iCT/ECT 2.0; "
                                 "sCM 1.4, distilling 1.6)")
    tangent_warmup: int | None = option(None, V.nonnegative_int,
                                        "sCM: steps over which the tangent's cos·sin·(x_t + σ_d dF/dt) term "
                                        "ramps from 0 to 1 (default a tenth of --steps)")
    decay_kimg: float | None = option(None, V.nonnegative_float,
                                      "the student's learning rate --lr/√max(t/t_ref, 1) (EDM2's inverse "
                                      "square-root decay) with t_ref this many thousand images; 0 = constant "
                                      "(default 0)")
    teacher: str | None = option(None, None, "CD: the teacher, a diffusion run/checkpoint/model directory")
    num_scales: int | None = option(None, V.positive_int, f"CD: points N of the Karras grid (default "
                                                          f"{DEFAULT_NUM_SCALES}; ImageNet-64 used 40)")
    s0: int | None = option(None, V.positive_int, "CT/iCT: initial discretisation s0 (CT 2, iCT 10)")
    s1: int | None = option(None, V.positive_int, "CT/iCT: final discretisation s1 (CT 150-200, iCT 1280)")
    mu0: float | None = option(None, V.probability, "CD/CT: target EMA μ0 (default 0.95)")
    distance: str | None = option(None, help="consistency distance (default l2; pseudo-huber for ict); lpips "
                                             "needs --lpips-weights", choices=DISTANCES)
    lpips_weights: str | None = option(None, None, "LPIPS weights file for --distance lpips (never "
                                                   "downloaded)")
    lpips_size: int | None = option(None, V.int_range(LPIPS_MIN_SIZE),
                                    "--distance lpips: working resolution, images resized bilinearly to "
                                    "SIZE px (default 224 below 256 px, the consistency-models usage; "
                                    "VGG-16's cost grows with SIZE²)", metavar="SIZE")
    lpips_mix: float | None = option(None, V.positive_float,
                                     "add λ·LPIPS (--lpips-weights, --lpips-size) to the --distance (not "
                                     "lpips): pseudo-Huber keeps colour and contrast, to which LPIPS's "
                                     "channel-normalised features are blind", metavar="λ")
    sigma_min: float | None = option(None, V.positive_float, f"smallest noise level σ_min (default "
                                                             f"{SIGMA_MIN})")
    sigma_max: float | None = option(None, V.positive_float, f"largest noise level σ_max (default "
                                                             f"{SIGMA_MAX:g})")
    sigma_data: float | None = option(None, V.positive_float, f"data standard deviation σ_data (default "
                                                              f"{SIGMA_DATA}, or the teacher's)")
    teacher_solver: str = option("heun", help="CD and ECT with --teacher: ODE step of the teacher",
                                 choices=SOLVERS)
    teacher_steps: int | None = option(None, V.positive_int,
                                       "CD: teacher ODE steps per grid interval, on the ρ-spaced points "
                                       "between its ends (default 1, the paper's); a coarse --num-scales "
                                       "grid with K steps keeps the teacher's accuracy of the K-times finer "
                                       "grid")
    cd_targets: str | None = option(None, help="CD: step (default, the paper's: the EMA student one teacher "
                                               "ODE step nearer the data) or trajectory (the end of the "
                                               "teacher's ODE trajectory through x_n, exact; trajectories "
                                               "are solved from σ_max down the --num-scales grid into a "
                                               "pool, so no bootstrapping)", choices=CD_TARGETS)
    trajectory_pool: int | None = option(None, V.nonnegative_int,
                                         f"CD with --cd-targets trajectory: teacher trajectories kept "
                                         f"(default {DEFAULT_TRAJECTORY_POOL})")
    trajectory_refresh: int | None = option(None, V.nonnegative_int,
                                            "CD with --cd-targets trajectory: trajectories replaced per "
                                            f"training step (default {DEFAULT_TRAJECTORY_REFRESH}); each is "
                                            "reused about pool/refresh steps")
    gan_weight: float | None = option(None, V.nonnegative_float,
                                      "weight λ of an adversarial term on the student's estimates "
                                      "(default 0 = none): a BigGAN projection discriminator, "
                                      "non-saturating loss with R1, adaptively weighted against the "
                                      "consistency loss as in CTM (--d-ch, --d-lr, --r1-gamma set D)")
    d_ch: int | None = option(None, V.positive_int, f"--gan-weight: discriminator channel width (default "
                                                    f"{DEFAULT_D_CH})")
    d_lr: float | None = option(None, V.positive_float, f"--gan-weight: discriminator learning rate (default "
                                                        f"{DEFAULT_D_LR})")
    r1_gamma: float | None = option(None, V.nonnegative_float, f"--gan-weight: R1 penalty weight γ (default "
                                                               f"{DEFAULT_R1_GAMMA})")
    gan_adaptive_max: float | None = option(None, V.positive_float,
                                            "--gan-weight: upper bound on the adaptive weight w of the "
                                            f"adversarial term (default {ADAPTIVE_MAX:g}, VQGAN's); a small "
                                            "bound (1-5) keeps λ·w from growing as D's gradient fades")
    teacher_guide_model: str | None = option(None, None,
                                             "CD: autoguidance of the teacher by this weaker denoiser of the "
                                             "same kind (a run, checkpoint or model directory) at "
                                             "--teacher-guidance w, instead of classifier-free guidance")
    teacher_guidance_interval: str | None = option(None, None, "CD, ECT and sCM with --teacher: guide the "
                                                               "teacher only for SIGMA_LO < σ <= SIGMA_HI",
                                                   metavar="SIGMA_LO,SIGMA_HI")
    teacher_guidance: float | None = option(None, V.any_float,
                                            "CD, ECT and sCM with --teacher: classifier-free guidance scale "
                                            "w of the teacher's ODE step (default 1 = none); the student "
                                            "learns the guided teacher's trajectories (guided distillation)")


@dataclass(frozen=True)
class ConsistencySampleOptions(Options):
    """``genzoo sample`` options of a consistency model."""

    family: ClassVar[str] = "consistency"

    steps: int | None = option(None, V.positive_int,
                               "network evaluations (default 1), or with --ts the grid size (default the "
                               "model's N)")
    ts: str | None = option(None, None, "grid indices of a multistep schedule, e.g. 0,22,39 on a --steps 40 "
                                        "grid")
    sigmas: str | None = option(None, None,
                                "explicit noise levels of the evaluations instead of --steps/--ts, strictly "
                                "decreasing in (σ_min, σ_max], e.g. 80,0.821 (two steps, ECT's CIFAR-10 "
                                "middle level) or 20 (one step from σ = 20)")
    search_middle: str | None = option(None, None,
                                       "sample with the two-step schedule 0,m,N−1 on the --steps N grid "
                                       "whose middle index m has the lowest Fréchet distance to REF (a "
                                       "dataset spec, reference or real-image .npz), found by ternary "
                                       "search as the released ternary_search does", metavar="REF")
    search_features: str | None = option(None, help="feature network of --search-middle (default: shapes for "
                                                    "a shapes REF, else inception, with weights from "
                                                    "$GENZOO_INCEPTION)", choices=("inception", "shapes"))
    search_seeds: str = option("1000000-1000499", seeds_text,
                               "seeds of the images each --search-middle candidate is scored on (500 seeds "
                               "apart from the usual ones)")
    precision: str = option("fp32", help="bf16 autocast while sampling", choices=("fp32", "bf16"))


class ConsistencyFamily(Family):
    name = "consistency"
    TrainOptions = ConsistencyTrainOptions
    SampleOptions = ConsistencySampleOptions

    # ------------------------------------------------------------------ training

    def build_objective(self, config: dict[str, Any], dataset: Any) -> ConsistencyObjective:
        teacher_path = config.get("teacher")
        mode = config.get("mode") or ("cd" if teacher_path else "ict")
        if mode == "cd" and not teacher_path:
            raise UserError("--mode cd: give the teacher diffusion model with --teacher RUN")
        if config.get("init") and mode not in ("ect", "scm"):
            raise UserError(f"--init: only --mode ect and scm start from a diffusion model (--mode {mode} "
                            "does not)")
        distill_path = teacher_path if mode in ("ect", "scm") else None
        if mode in ("ect", "scm"):
            teacher_path = config.get("init") or teacher_path
            if not teacher_path and mode == "ect":
                raise UserError("--mode ect: give the diffusion model to tune with --init RUN (or --teacher)")
            flag = "--init" if config.get("init") else "--teacher"
            teacher = _load_teacher(teacher_path, flag) if teacher_path else None
        else:
            teacher = _load_teacher(teacher_path) if mode == "cd" else None
        resolution = int(getattr(dataset, "resolution", 0) or 0)
        if teacher is not None:
            tcfg = record_of(teacher).config
            if tcfg.get("resolution") and resolution and int(tcfg["resolution"]) != resolution:
                raise UserError(f"--teacher {teacher_path}: makes {tcfg['resolution']} px images, "
                                f"the data is {resolution} px")
            if not hasattr(teacher, "model") or not tcfg.get("arch"):
                raise UserError(f"--teacher {teacher_path}: no network to initialise the student from")
            arch, net_config = tcfg["arch"], dict(tcfg["net"])
            network = copy.deepcopy(teacher.model)  # the student starts from the teacher (CM, Sec. 5)
            if config.get("dropout") is not None:
                _set_dropout(network, net_config, float(config["dropout"]), str(teacher_path))
            if config.get("sigma_data") is None:
                config["sigma_data"] = float(getattr(teacher, "sigma_data", SIGMA_DATA))
            if mode == "scm" and tcfg.get("precond") not in (None, "edm"):
                raise UserError(f"{flag} {teacher_path}: sCM's TrigFlow student needs an EDM-preconditioned "
                                f"network, got precond {tcfg.get('precond')!r}")
            if mode in ("ect", "scm") and distill_path:
                distill = teacher if distill_path == teacher_path else _load_teacher(distill_path)
                teacher = _guided_teacher(distill, config, distill_path)
            else:
                teacher = _guided_teacher(teacher, config, teacher_path) if mode == "cd" else None
        else:
            arch, net_config = _fresh_network(config, dataset)
            network = nets.build(arch, **net_config)
        config.update(arch=arch, net=net_config, mode=mode)
        for key, value in _model_kwargs(config).items():
            if key in ("sigma_min", "sigma_max", "sigma_data"):
                config[key] = value
        student = _student_class(mode)(network, **_model_kwargs(config))
        steps = int(config.get("steps") or 0)
        if mode in ("ct", "ict", "ect") and steps <= 0:
            raise UserError(f"--mode {mode}: give --steps N (N(k) is a function of the total steps)")
        objective = ConsistencyObjective(
            student, mode, teacher, num_scales=int(config.get("num_scales") or DEFAULT_NUM_SCALES),
            total_steps=steps, s0=config.get("s0"), s1=config.get("s1"), mu0=config.get("mu0"),
            distance=config.get("distance"), solver=config.get("teacher_solver") or "heun",
            lr=float(config.get("lr") or DEFAULT_LR), lpips_weights=config.get("lpips_weights"),
            lpips_size=None if config.get("lpips_size") is None else int(config["lpips_size"]),
            lpips_mix=None if config.get("lpips_mix") is None else float(config["lpips_mix"]),
            teacher_steps=int(config.get("teacher_steps") or 1), seed=int(config.get("seed") or 0),
            image_shape=(int(getattr(dataset, "num_channels", 3)), resolution, resolution),
            **_ect_options(config, mode), tangent_warmup=_tangent_warmup(config, mode, steps),
            **_trajectory_targets(config, mode), **_adversarial(config, dataset),
            decay_images=float(config.get("decay_kimg") or 0.0) * 1000,
            p_mean=None if config.get("p_mean") is None else float(config["p_mean"]),
            p_std=None if config.get("p_std") is None else float(config["p_std"]))
        if mode in LOGNORMAL_MODES:
            config.update(p_mean=objective.p_mean, p_std=objective.p_std)
        config.update(num_scales=objective.scales_at(steps), s0=objective.s0, s1=objective.s1,
                      mu0=objective.mu0, distance=objective.distance_name, lr=objective.lr,
                      teacher_steps=objective.teacher_steps)
        return objective

    def record_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The student's network flags as built: the teacher's (CD; ECT/sCM from a diffusion model, where
        ``--uncond``/``--augment`` do not apply) or the flags' resolved defaults; the teacher's guidance
        scale; ``--gan-weight`` 0 leaves the discriminator's options out."""
        mode = config.get("mode")
        from_teacher = mode == "cd" or (mode in ("ect", "scm")
                                        and bool(config.get("init") or config.get("teacher")))
        record = record_network(config, from_flags=not from_teacher)
        record["gan_weight"] = float(config.get("gan_weight") or 0.0)
        if mode == "cd" or (mode == "scm" and config.get("teacher")):  # the guided teacher (1 = none)
            guidance = config.get("teacher_guidance")
            record["teacher_guidance"] = 1.0 if guidance is None else float(guidance)
        if record["gan_weight"] <= 0:
            for key in ("d_ch", "d_lr", "r1_gamma", "gan_adaptive_max"):
                record.pop(key, None)
        return record

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        if not config.get("arch") or "net" not in config:
            raise UserError("config.json: a consistency model needs 'arch' and 'net' entries")
        return _student_class(config.get("mode"))(nets.build(config["arch"], **config["net"]),
                                                  **_model_kwargs(config))

    # ------------------------------------------------------------------ sampling

    def prepare_sampling(self, model: nn.Module, options: Any) -> ConsistencySampleOptions:
        """``--search-middle REF``: pick m of ``ts = 0, m, N−1`` by ternary search on the Fréchet distance."""
        options = self.sample_options(model, options)
        ref = options.search_middle
        if not ref:
            return options
        from genzoo.consistency.sampling import search_middle_step
        from genzoo.metrics import frechet_metric
        from genzoo.seeds import parse_seeds

        if options.get("ts") or options.get("sigmas"):
            raise UserError("--search-middle chooses the --ts schedule itself; give it or --ts/--sigmas, "
                            "not both")
        config = config_of(model)
        steps = int(options.get("steps") or config.get("num_scales") or 40)
        if steps < 4:
            raise UserError(f"--search-middle: the --steps grid needs at least 4 points, got {steps}")
        features = options.get("search_features") or (
            "shapes" if str(ref).startswith("shapes") else "inception")
        seeds = parse_seeds(options.get("search_seeds") or "1000000-1000499")
        labels = labels_for_seeds(seeds, None, int(config.get("num_classes", 0) or 0))
        device = next(model.parameters()).device
        metric = frechet_metric(ref, features, ref_count=max(1000, 2 * len(seeds)), device=device)
        best, value, seen = search_middle_step(
            model, metric, seeds, steps, class_labels=torch.tensor(labels, device=device) if labels else None)
        table = ", ".join(f"{m}: {fd:.3g}" for m, fd in seen.items())
        print(f"genzoo sample: --search-middle {ref} ({features} FD of {len(seeds)} images) {table}; "
              f"using --ts 0,{best},{steps - 1} (FD {value:.4g})", file=sys.stderr, flush=True)
        return options.replace(ts=f"0,{best},{steps - 1}", steps=steps, search_middle=None)

    @torch.no_grad()
    def sample(self, model: nn.Module, rng: StackedRandomGenerator, class_labels: torch.Tensor | None,
               options: Any) -> tuple[torch.Tensor, int]:
        """One step f(σ_max·z, σ_max) by default; ``steps`` evaluations; the grid indices ``ts``; or the noise
        levels ``sigmas``."""
        options = self.sample_options(model, options)
        config = config_of(model)
        ts = parse_ts(options.get("ts"))
        steps = options.get("steps")
        sigmas = parse_sigmas(options.get("sigmas"), float(model.sigma_min), float(model.sigma_max))
        if sigmas is not None:
            if ts is not None:
                raise UserError("--sigmas and --ts both set the schedule: give one of them")
            if steps is not None and steps != len(sigmas):
                raise UserError(f"--steps {steps} disagrees with the {len(sigmas)} noise level(s) of "
                                "--sigmas: give one of them")
            steps = None
        elif ts is not None and steps is None:
            steps = int(config.get("num_scales") or 40)
        channels = int(config.get("channels") or getattr(model, "img_channels", None) or 3)
        resolution = int(config.get("resolution") or model.resolution)
        if class_labels is None and int(getattr(model, "label_dim", 0) or 0) > 0:
            raise UserError("this consistency model is class-conditional: give class labels")
        bf16 = options.get("precision") == "bf16"
        with torch.autocast(device_type=rng.device.type, dtype=torch.bfloat16, enabled=bf16):
            images, nfe = sample(model, rng.randn_like, (len(rng), channels, resolution, resolution),
                                 class_labels, steps=steps, ts=ts, device=rng.device, sigmas=sigmas)
        return images.float(), nfe


FAMILY = ConsistencyFamily()

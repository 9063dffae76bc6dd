"""Published evaluation protocols as data: ``genzoo reproduce PRESET --ckpt FILE --ref FILE``.

A preset names the released checkpoint, the sampler and its settings (as ``genzoo sample`` flags), the
seeds and number of samples, the reference batch, the metric, and the published number with its
source. Numbers marked ``None`` are protocols whose number the cited table does not give for exactly
these settings; genzoo prints the measurement without a comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    family: str                       # the genzoo family the converted checkpoint must have
    checkpoint: str                   # released file name
    convert: str                      # how to turn it into a genzoo model directory
    published: float | None           # the published number (FID unless ``metric`` says otherwise)
    source: str                       # paper and table (or README) the number is from
    flags: tuple[str, ...]            # `genzoo sample` flags of the protocol
    reference: str                    # the reference batch the number was measured against
    num: int = 50_000
    metric: str = "fid"
    classes: str = "one class per seed, uniform over the classes (drawn from the seed)"
    needs_classifier: str | None = None  # released classifier file, for classifier guidance
    needs_guide: str | None = None    # released guiding model (EDM2's unconditional XS), for --guide-model
    latent: bool = False              # a latent model: its images come through the SD VAE decoder
    # rough time for the full protocol on one H100-class GPU: NFE × network FLOPs × num at ~40% of the
    # bf16 peak (an estimate; `--num 1000` and the images/s in samples.cost.json give a measured one)
    gpu_hours: float = 1.0
    fd_dinov2: bool = False           # EDM2's suite: FD_DINOv2 beside FID when --dinov2 is given
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def seeds(self) -> str:
        return f"0-{self.num - 1}"

    @property
    def source_format(self) -> str:
        """The ``genzoo convert --from`` format of the released checkpoint (recorded as ``source`` in the
        converted model's config.json)."""
        return self.convert.split("--from ", 1)[1].split()[0]

    @property
    def conditional(self) -> bool:
        return self.classes != "unconditional"


_EDM_REF = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"
_ADM_REF_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/"


def _adm_ref(res: int) -> str:
    """The ADM evaluator's ImageNet reference batch (openai/guided-diffusion evaluations/README.md)."""
    return f"{_ADM_REF_URL}{res}/VIRTUAL_imagenet{res}" + ("_labeled" if res < 512 else "") + ".npz"
_EDM2_MODELS = "https://nvlabs-fi-cdn.nvidia.com/edm2/posthoc-reconstructions/"
_EDM2_REF = "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img{res}.pkl (its FID mu/sigma as .npz)"
_LOADER = "pickle loader of issue 'Official EDM and EDM2 checkpoints'"
_EDM_CONVERT = f"genzoo convert --from edm FILE OUT (EDM {_LOADER})"
_EDM2_CONVERT = f"genzoo convert --from edm2 FILE OUT (EDM2 {_LOADER})"
_HEUN = ("--sampler", "heun")


def _adm(res: int, guided: bool, published: float | None, scale: float, hours: float) -> Preset:
    """ADM / ADM-G (Dhariwal & Nichol 2021): 250 respaced DDPM steps of the 1000-step model; the classifier
    scales are those of the guided-diffusion README (1.0 at 64 and 256, 0.5 at 128)."""
    tag = f"{res}x{res}"
    flags = ("--sampler", "adm-ddpm", "--respacing", "250")
    return Preset(
        name=f"adm-imagenet{res}" + ("-guided" if guided else ""), family="diffusion",
        checkpoint=f"{tag}_diffusion.pt",
        convert=f"genzoo convert --from guided-diffusion --preset {tag}_diffusion FILE OUT",
        published=published,
        source=("Dhariwal & Nichol 2021, Table 4" + (" (ADM-G)" if guided else " (ADM)" if res != 64
                                                       else " (ADM, dropout)")
                if published is not None else
                "Dhariwal & Nichol 2021 (Table 4 gives no ADM-G row at 64x64; README flags)"),
        flags=flags + (("--classifier-scale", str(scale)) if guided else ()),
        reference=_adm_ref(res), needs_classifier=f"{tag}_classifier.pt" if guided else None,
        gpu_hours=hours, notes="250 respaced DDPM steps" + (f", classifier scale {scale}" if guided else ""))


def _cm(kind: str, steps: int, published: float, ts: str) -> Preset:
    """Consistency models on ImageNet-64 (Song et al. 2023, Table 2; flags of the repo's scripts/launch.sh:
    one evaluation f(σ_max·z, σ_max), or the two-step index lists on the N-point grid of the training run,
    40 for CD and 201 for CT)."""
    ckpt = f"{kind}_imagenet64" + ("_lpips" if kind == "cd" else "")
    return Preset(
        f"cm-imagenet64-{kind}-{steps}step", "consistency", f"{ckpt}.pt",
        f"genzoo convert --from consistency-models --preset {ckpt} FILE OUT", published,
        "Song et al. 2023 (consistency models), Table 2" + (" (CD, LPIPS)" if kind == "cd" else " (CT)"),
        ("--steps", "40" if kind == "cd" else "201", "--ts", ts) if steps == 2 else ("--steps", "1"),
        _adm_ref(64), gpu_hours=0.1 * steps,
        notes=f"{steps} network evaluation(s)" + (f", multistep ts {ts}" if steps == 2 else ", one step"))


def _biggan(res: int, hours: float) -> Preset:
    """BigGAN-deep through the PyTorch port of the TF-Hub generators (ψ scales a normal truncated to
    [−2, 2]); the paper's Table 2 reports FID/IS at truncations chosen by sweep, not at a named ψ."""
    return Preset(
        f"biggan-deep-{res}", "gan",
        f"pytorch_model.bin (huggingface/pytorch-pretrained-BigGAN biggan-deep-{res})",
        f"genzoo convert --from biggan-hf --preset biggan-deep-{res} FILE OUT", None,
        "Brock et al. 2019 (BigGAN), Table 2 (BigGAN-deep rows) and Figure 17: numbers along a truncation "
        "sweep, none at exactly ψ = 1", ("--truncation", "1.0"), _adm_ref(res), gpu_hours=hours,
        notes="truncation ψ = 1 (the port's untruncated setting); sweep ψ with --truncation for the curve")


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("edm-cifar10-cond-vp", "diffusion", "edm-cifar10-32x32-cond-vp.pkl", _EDM_CONVERT, 1.79,
           "Karras et al. 2022 (EDM), Table 2 (CIFAR-10 cond., VP, 35 NFE)", _HEUN + ("--steps", "18"),
           _EDM_REF + "cifar10-32x32.npz", gpu_hours=0.15,
           notes="deterministic Heun, 18 steps = 35 NFE; the paper reports the minimum of 3 runs (--blocks)"),
    Preset("edm-cifar10-uncond-vp", "diffusion", "edm-cifar10-32x32-uncond-vp.pkl", _EDM_CONVERT, 1.97,
           "Karras et al. 2022 (EDM), Table 2 (CIFAR-10 uncond., VP, 35 NFE)", _HEUN + ("--steps", "18"),
           _EDM_REF + "cifar10-32x32.npz", classes="unconditional", gpu_hours=0.15,
           notes="deterministic Heun, 18 steps = 35 NFE; minimum of 3 runs in the paper"),
    Preset("edm-imagenet64-adm", "diffusion", "edm-imagenet-64x64-cond-adm.pkl", _EDM_CONVERT, 1.36,
           "Karras et al. 2022 (EDM), Sec. 5 and abstract (ImageNet-64, retrained ADM, 511 NFE)",
           _HEUN + ("--steps", "256", "--churn", "40", "--s-min", "0.05", "--s-max", "50",
                    "--s-noise", "1.003"),
           _EDM_REF + "imagenet-64x64.npz", gpu_hours=6,
           notes="stochastic sampler, 256 steps = 511 NFE (NVlabs/edm README); minimum of 3 runs in the "
                 "paper"),
    _adm(64, False, 2.07, 1.0, 3), _adm(64, True, None, 1.0, 4),
    _adm(128, False, 5.91, 0.5, 8), _adm(128, True, 2.97, 0.5, 10),
    _adm(256, False, 10.94, 1.0, 30), _adm(256, True, 4.59, 1.0, 36),
    _cm("cd", 1, 6.20, ""), _cm("cd", 2, 4.70, "0,22,39"),
    _cm("ct", 1, 13.0, ""), _cm("ct", 2, 11.1, "0,106,200"),
    _biggan(128, 0.1), _biggan(256, 0.3), _biggan(512, 1.0),
    Preset("edm2-imagenet64-xl", "diffusion", "edm2-img64-xl-0671088-0.040.pkl (" + _EDM2_MODELS + ")",
           _EDM2_CONVERT, 1.33, "Karras et al. 2024 (EDM2), Table 3 (EDM2-XL, FID-optimal EMA 0.040)",
           _HEUN + ("--steps", "32"), _EDM2_REF.format(res=64), gpu_hours=1.5, fd_dinov2=True,
           notes="deterministic 2nd-order sampler, 32 steps = 63 NFE (generate_images.py preset "
                 "edm2-img64-xl-fid)"),
    Preset("edm2-imagenet512-xxl", "diffusion", "edm2-img512-xxl-0939524-0.015.pkl (" + _EDM2_MODELS + ")",
           _EDM2_CONVERT, 1.81, "Karras et al. 2024 (EDM2), Table 2 (EDM2-XXL with guidance)",
           _HEUN + ("--steps", "32", "--guidance", "1.2"), _EDM2_REF.format(res=512),
           needs_guide="edm2-img512-xs-uncond-2147483-0.015.pkl", latent=True, gpu_hours=6, fd_dinov2=True,
           notes="latent model decoded by the SD VAE (stabilityai/sd-vae-ft-mse, --vae); guidance 1.2 by the "
                 "unconditional XS model (generate_images.py preset edm2-img512-xxl-guid-fid); 32 steps = 63 "
                 "NFE of each model"),
]}


def format_list() -> str:
    """The table `genzoo reproduce --list` prints."""
    lines = []
    for p in PRESETS.values():
        number = (f"{p.metric.upper()} {p.published}" if p.published is not None
                  else "no single published number")
        files = (p.checkpoint + (f" + classifier {p.needs_classifier}" if p.needs_classifier else "")
                 + (f" + guide {p.needs_guide} (--guide-model)" if p.needs_guide else "")
                 + (" + the SD VAE stabilityai/sd-vae-ft-mse (--vae)" if p.latent else ""))
        lines.append(f"{p.name}\n  checkpoint: {files}"
                     f"\n  convert:    {p.convert}\n  published:  {number} ({p.source})"
                     f"\n  protocol:   genzoo sample {' '.join(p.flags)} --seeds {p.seeds}; {p.classes}; "
                     f"{p.notes}" + ("; with --dinov2 also FD_DINOv2" if p.fd_dinov2 else "")
                     + f"\n  reference:  {p.reference}\n  time:       roughly {p.gpu_hours} GPU-hours "
                     f"for {p.num} samples on one H100-class GPU (estimated from NFE and FLOPs; measure with "
                     "--num 1000 and the images/s in samples.cost.json)")
    return "\n".join(lines)

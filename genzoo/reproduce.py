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
    gpu_hours: float = 1.0            # rough time for the full protocol on one H100-class GPU
    fd_dinov2: bool = False           # EDM2's suite: FD_DINOv2 beside FID when --dinov2 is given
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def seeds(self) -> str:
        return f"0-{self.num - 1}"


_EDM_REF = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"
_ADM_REF = "openai/guided-diffusion evaluations: VIRTUAL_imagenet{res}x{res}_labeled.npz"
_LOADER = "pickle loader of issue 'Official EDM and EDM2 checkpoints'"
_EDM_CONVERT = f"genzoo convert --from edm FILE OUT (EDM {_LOADER})"
_EDM2_CONVERT = f"genzoo convert --from edm2 FILE OUT (EDM2 {_LOADER})"
_HEUN = ("--sampler", "heun")


def _adm(res: int, guided: bool, published: float | None, scale: float, hours: float) -> Preset:
    tag = f"{res}x{res}"
    flags = ("--sampler", "adm-ddpm", "--respacing", "250")
    return Preset(
        name=f"adm-imagenet{res}" + ("-guided" if guided else ""), family="diffusion",
        checkpoint=f"{tag}_diffusion.pt",
        convert=f"genzoo convert --from guided-diffusion --preset {tag}_diffusion FILE OUT",
        published=published,
        source="Dhariwal & Nichol 2021, Table 4" + (" (ADM-G)" if guided else " (ADM)"),
        flags=flags + (("--classifier-scale", str(scale)) if guided else ()),
        reference=_ADM_REF.format(res=res), needs_classifier=f"{tag}_classifier.pt" if guided else None,
        gpu_hours=hours, notes="250 respaced DDPM steps" + (f", classifier scale {scale}" if guided else ""))


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("edm-cifar10-cond-vp", "diffusion", "edm-cifar10-32x32-cond-vp.pkl", _EDM_CONVERT, 1.79,
           "Karras et al. 2022 (EDM), Table 2", _HEUN + ("--steps", "18"), _EDM_REF + "cifar10-32x32.npz",
           gpu_hours=0.3, notes="18 Heun steps = 35 NFE; the paper reports the minimum of 3 runs (--blocks)"),
    Preset("edm-cifar10-uncond-vp", "diffusion", "edm-cifar10-32x32-uncond-vp.pkl", _EDM_CONVERT, 1.97,
           "Karras et al. 2022 (EDM), Table 2", _HEUN + ("--steps", "18"), _EDM_REF + "cifar10-32x32.npz",
           classes="unconditional", gpu_hours=0.3, notes="18 Heun steps = 35 NFE"),
    Preset("edm-imagenet64-adm", "diffusion", "edm-imagenet-64x64-cond-adm.pkl", _EDM_CONVERT, 1.36,
           "Karras et al. 2022 (EDM), Table 2", _HEUN + ("--steps", "256", "--churn", "40", "--s-min", "0.05",
                                                        "--s-max", "50", "--s-noise", "1.003"),
           _EDM_REF + "imagenet-64x64.npz", gpu_hours=12,
           notes="stochastic sampler, 256 steps = 511 NFE"),
    _adm(64, False, 2.07, 1.0, 6), _adm(64, True, None, 1.0, 8),
    _adm(128, False, 5.91, 0.5, 12), _adm(128, True, 2.97, 0.5, 16),
    _adm(256, False, 10.94, 1.0, 40), _adm(256, True, 4.59, 1.0, 50),
    *[Preset(f"cm-imagenet64-{kind}-{steps}step", "consistency",
             f"{kind}_imagenet64" + ("_lpips" if kind == "cd" else "") + ".pt",
             f"genzoo convert --from consistency-models --preset {kind}_imagenet64"
             + ("_lpips" if kind == "cd" else "") + " FILE OUT", published,
             "Song et al. 2023 (consistency models), Table 2",
             ("--steps", "40" if kind == "cd" else "201") + (("--ts", ts) if steps == 2 else ()),
             _ADM_REF.format(res=64), gpu_hours=0.5,
             notes=f"{steps} step(s)" + (f", ts {ts}" if steps == 2 else ""))
      for kind, steps, published, ts in (("cd", 1, 6.20, ""), ("cd", 2, 4.70, "0,22,39"),
                                         ("ct", 1, 13.0, ""), ("ct", 2, 11.1, "0,106,200"))],
    *[Preset(f"biggan-deep-{res}", "gan", "pytorch_model.bin (huggingface/pytorch-pretrained-BigGAN "
             f"biggan-deep-{res})", f"genzoo convert --from biggan-hf --preset biggan-deep-{res} FILE OUT",
             None, "Brock et al. 2019 (BigGAN), Table 5 / Figure 17 (truncation sweep)",
             ("--truncation", str(psi)), _ADM_REF.format(res=res), gpu_hours=0.2,
             notes=f"truncation ψ = {psi}; the paper reports FID/IS at several ψ")
      for res, psi in ((128, 1.0), (256, 1.0), (512, 1.0))],
    Preset("edm2-imagenet64-xl", "diffusion", "edm2-img64-xl-*.pkl (NVlabs/edm2 README, FID-optimal EMA)",
           _EDM2_CONVERT, 1.33, "Karras et al. 2024 (EDM2), Table 3", _HEUN + ("--steps", "32"),
           "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img64.pkl (convert to .npz)", gpu_hours=3,
           fd_dinov2=True, notes="deterministic 2nd-order sampler, 32 steps = 63 NFE"),
    Preset("edm2-imagenet512-xxl", "diffusion", "edm2-img512-xxl-*.pkl (NVlabs/edm2 README, FID-optimal EMA)",
           _EDM2_CONVERT, 1.81, "Karras et al. 2024 (EDM2), Table 2 (with guidance)",
           _HEUN + ("--steps", "32", "--guidance", "1.2"),
           "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img512.pkl (convert to .npz)", gpu_hours=20,
           fd_dinov2=True,
           notes="latent model (SD VAE decoder); guidance by the XS model in the paper, here the scale only"),
]}


def format_list() -> str:
    """The table `genzoo reproduce --list` prints."""
    lines = []
    for p in PRESETS.values():
        number = (f"{p.metric.upper()} {p.published}" if p.published is not None
                  else "no single published number")
        lines.append(f"{p.name}\n  checkpoint: {p.checkpoint}"
                     + (f" + classifier {p.needs_classifier}" if p.needs_classifier else "")
                     + f"\n  convert:    {p.convert}\n  published:  {number} ({p.source})"
                     f"\n  protocol:   genzoo sample {' '.join(p.flags)} --seeds {p.seeds}; {p.classes}; "
                     f"{p.notes}" + ("; with --dinov2 also FD_DINOv2" if p.fd_dinov2 else "")
                     + f"\n  reference:  {p.reference}\n  time:       roughly {p.gpu_hours} GPU-hours "
                     f"for {p.num} samples on one H100-class GPU (an estimate, not measured)")
    return "\n".join(lines)

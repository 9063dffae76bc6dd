"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", Sec. 3 and Appendix C): power-function EMA profiles tracked during training, and any other
EMA length reconstructed afterwards from stored snapshots by least squares.

A power-function EMA at time t averages the trajectory θ(τ), τ ∈ [0, t], with the profile
p(τ) = (γ+1)·τ^γ / t^(γ+1); its width relative to t is ``std`` (σ_rel). The functions mirror the
meaning of EDM2's ``training/phema.py``: times (``ofs``) may be in any unit (steps, images) as long as
all of one call use the same, because the reconstruction is invariant to rescaling time.

Tracking in the engine uses β = (1 − Δt/t)^(γ+1) with t the images seen after the update and Δt the
batch: then the tracked average of a step-wise constant trajectory *is* the continuous profile's
average (the weight of step k is ((kΔ)^(γ+1) − ((k−1)Δ)^(γ+1)) / t^(γ+1), the profile's integral over
that step), so the reconstruction below has no discretisation error of its own.

Run-directory layout (written by :class:`PowerFunctionEMA` through the engine)::

    RUN/phema/snapshot-{step:06d}-std{std:.3f}.safetensors   keys "<player>.<key>" as ema.safetensors;
        metadata: step, images (the offset t), std, parameters (JSON list of the averaged keys)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from genzoo.errors import UserError

#: EDM2's two tracked profiles (training/training_loop.py: ema_std = [0.050, 0.100])
DEFAULT_STDS = (0.050, 0.100)
#: σ_rel of γ = 0 (a uniform average since the start): larger widths have γ < 0 and are not offered
MAX_STD = math.sqrt(1 / 12)
SNAPSHOT_DIR = "phema"


# ------------------------------------------------------------------------------------------------ formulas

def exp_to_std(exp: float | np.ndarray) -> np.ndarray:
    """σ_rel of the power-function profile with exponent γ: √((γ+1) / ((γ+2)²(γ+3))) (EDM2 eq. 123)."""
    g = np.float64(exp)
    return np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))


def std_to_exp(std: float | np.ndarray) -> np.ndarray:
    """γ for a relative width σ_rel (EDM2 eq. 126): the largest real root of
    γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²) = 0, i.e. eq. 123 squared and multiplied out."""
    s = np.asarray(std, dtype=np.float64)
    if np.any(~(s > 0)) or np.any(s >= MAX_STD):
        raise ValueError(f"EMA std must lie in (0, {MAX_STD:.4f}), got {s.tolist()}")
    inv = s.reshape(-1) ** -2
    roots = [np.polynomial.polynomial.polyroots([12 - k, 16 - k, 7.0, 1.0]) for k in inv]
    exps = [float(np.max(r[np.abs(r.imag) < 1e-9].real)) for r in roots]
    return np.asarray(exps, dtype=np.float64).reshape(s.shape)


def power_function_beta(std: float, t: float, t_delta: float = 1.0) -> float:
    """β of one EMA update that keeps tracking the σ_rel = ``std`` profile: (1 − Δt/t)^(γ+1) (EDM2 eq. 127).

    ``t`` is the time after the update (training step 1, 2, ... with Δt = 1, or images seen with
    Δt = batch); the first update (t = Δt) has β = 0 and copies the weights.
    """
    return float((1 - t_delta / t) ** (std_to_exp(std) + 1))


def power_function_correlation(a_ofs, a_std, b_ofs, b_std) -> np.ndarray:
    """⟨p_a, p_b⟩ = ∫ p_a(τ) p_b(τ) dτ of two profiles ending at a_ofs and b_ofs (EDM2 eq. 151).

    With t_a ≤ t_b the integral runs over [0, t_a]: (γ_a+1)(γ_b+1)/(γ_a+γ_b+1) · (t_a/t_b)^γ_b / t_b.
    """
    a_exp, b_exp = std_to_exp(a_std), std_to_exp(b_std)
    a_ofs, b_ofs = np.float64(a_ofs), np.float64(b_ofs)
    short, long = np.minimum(a_ofs, b_ofs), np.maximum(a_ofs, b_ofs)
    long_exp = np.where(a_ofs <= b_ofs, b_exp, a_exp)
    scale = (a_exp + 1) * (b_exp + 1) / (a_exp + b_exp + 1)
    return scale * (short / long) ** long_exp / long


def solve_posthoc_coefficients(in_ofs, in_std, out_ofs, out_std) -> np.ndarray:
    """Weights X [in, out] with Σ_i X[i, j]·snapshot_i ≈ the EMA (out_ofs[j], out_std[j]) (EDM2 Algorithm 3).

    Least squares over the profiles: the Gram matrix of the stored profiles against their
    correlation with each wanted profile; each column is then normalised to sum to 1.
    """
    in_ofs, in_std = (np.ravel(a) for a in np.broadcast_arrays(np.float64(in_ofs), np.float64(in_std)))
    out_ofs, out_std = (np.ravel(a) for a in np.broadcast_arrays(np.float64(out_ofs), np.float64(out_std)))
    col, row = (lambda v: v[:, None]), (lambda v: v[None, :])
    gram = power_function_correlation(col(in_ofs), col(in_std), row(in_ofs), row(in_std))
    cross = power_function_correlation(col(in_ofs), col(in_std), row(out_ofs), row(out_std))
    x = np.linalg.solve(gram, cross)
    return x / x.sum(axis=0, keepdims=True)


def parse_stds(text: str | Sequence[float] | None) -> tuple[float, ...]:
    """``--phema-stds 0.050,0.100`` -> (0.05, 0.1); "" or None -> () (post-hoc EMA off)."""
    if text is None:
        return ()
    items = [s for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text)
    try:
        stds = tuple(float(s) for s in items)
    except ValueError:
        raise UserError(f"--phema-stds {text!r}: expected comma-separated numbers, e.g. 0.050,0.100") \
            from None
    for s in stds:
        if not 0 < s < MAX_STD:
            raise UserError(f"--phema-stds: each std must lie in (0, {MAX_STD:.4f}), got {s:g}")
    if len(set(stds)) != len(stds):
        raise UserError(f"--phema-stds {text!r}: a std is given twice")
    return stds


# ------------------------------------------------------------------------------------------------ tracking

class PowerFunctionEMA(nn.Module):
    """Power-function EMAs (one per std) of some players, updated by the engine after each step.

    ``self.averages[f"p{i}"][player]`` tracks ``stds[i]``; parameters are averaged, buffers copied.
    """

    def __init__(self, players: Mapping[str, nn.Module], stds: Sequence[float]):
        super().__init__()
        import copy

        self.stds = tuple(float(s) for s in stds)
        self.averages = nn.ModuleDict({
            f"p{i}": nn.ModuleDict({name: copy.deepcopy(m).requires_grad_(False).eval()
                                    for name, m in players.items()})
            for i in range(len(self.stds))})

    @torch.no_grad()
    def update(self, source: Mapping[str, nn.Module], images_after: int, batch: int) -> None:
        for i, std in enumerate(self.stds):
            beta = power_function_beta(std, images_after, batch)
            for name, ema in self.averages[f"p{i}"].items():
                for p_ema, p_net in zip(ema.parameters(), source[name].parameters()):
                    p_ema.copy_(p_net.detach().lerp(p_ema, beta))
                for b_ema, b_net in zip(ema.buffers(), source[name].buffers()):
                    b_ema.copy_(b_net)

    @torch.no_grad()
    def reset(self, source: Mapping[str, nn.Module]) -> None:
        """Every average set to the current weights (a resumed run whose checkpoint has no averages)."""
        for averages in self.averages.values():
            for name, ema in averages.items():
                ema.load_state_dict(source[name].state_dict())

    def train(self, mode: bool = True) -> PowerFunctionEMA:
        return self

    def write_snapshots(self, run_dir: Path, step: int, images: int) -> list[Path]:
        """One safetensors file per std under ``RUN/phema/``, each written to a temporary and renamed."""
        folder = Path(run_dir) / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, std in enumerate(self.stds):
            averages = self.averages[f"p{i}"]
            state = {f"{name}.{k}": v.detach().contiguous().cpu().clone()
                     for name, m in averages.items()
                     for k, v in m.state_dict().items()}
            params = [f"{name}.{k}" for name, m in averages.items() for k, _ in m.named_parameters()]
            meta = {"step": str(step), "images": str(images), "std": repr(std),
                    "parameters": json.dumps(params)}
            path = folder / f"snapshot-{step:06d}-std{std:.3f}.safetensors"
            _save_atomic(state, meta, path)
            paths.append(path)
        return paths


def _save_atomic(state: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------------- reconstruction

@dataclass(frozen=True)
class Snapshot:
    path: Path
    step: int
    images: int
    std: float
    parameters: tuple[str, ...]


def list_snapshots(run_dir: str | Path) -> list[Snapshot]:
    """The run's stored power-function EMA snapshots, oldest first; unreadable files are errors."""
    from safetensors import safe_open

    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        raise UserError(f"{run_dir}: no post-hoc EMA snapshots ({folder} is missing; train with "
                        "--phema-stds, on by default)")
    found = []
    for path in sorted(folder.glob("snapshot-*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            found.append(Snapshot(path, int(meta["step"]), int(meta["images"]), float(meta["std"]),
                                  tuple(json.loads(meta["parameters"]))))
        except Exception as err:  # noqa: BLE001 - safetensors and json raise several types
            raise UserError(f"{path}: not a readable post-hoc EMA snapshot ({type(err).__name__}: {err})") \
                from None
    if not found:
        raise UserError(f"{folder}: holds no snapshot-*.safetensors files")
    return sorted(found, key=lambda s: (s.images, s.std))


def reconstruct(run_dir: str | Path, stds: Iterable[float], images: int | None = None
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, object]]:
    """The EMA weights of each σ_rel in ``stds`` at ``images`` (default: the newest snapshot), from every
    snapshot stored up to then. Returns (one state dict per std, keys ``"<player>.<key>"``; info)."""
    from genzoo.checkpoints import load_safetensors

    stds = [float(s) for s in stds]
    for s in stds:
        if not 0 < s < MAX_STD:
            raise UserError(f"--std {s:g}: the relative EMA length must lie in (0, {MAX_STD:.4f})")
    snaps = list_snapshots(run_dir)
    target = max(s.images for s in snaps) if images is None else int(images)
    snaps = [s for s in snaps if s.images <= target]
    if not snaps:
        raise UserError(f"{run_dir}: no snapshot at or before {target} images")
    if len({(s.images, s.std) for s in snaps}) != len(snaps):
        raise UserError(f"{Path(run_dir) / SNAPSHOT_DIR}: two snapshots share a time and std")
    coeffs = solve_posthoc_coefficients([s.images for s in snaps], [s.std for s in snaps],
                                        target, stds)
    outputs: list[dict[str, torch.Tensor]] = [{} for _ in stds]
    newest = snaps[-1]
    dtypes: dict[str, torch.dtype] = {}
    for i, snap in enumerate(snaps):
        state = load_safetensors(snap.path)
        params = set(snap.parameters)
        dtypes.update({k: v.dtype for k, v in state.items() if k in params})
        for j, out in enumerate(outputs):
            for key, value in state.items():
                if key in params:
                    acc = out.get(key)
                    term = value.to(torch.float64) * float(coeffs[i, j])
                    out[key] = term if acc is None else acc + term
                elif snap is newest or key not in out:
                    out[key] = value  # buffers (normalisation statistics, ...): the newest values
    for out in outputs:
        for key, dtype in dtypes.items():
            out[key] = out[key].to(dtype)
    info = {"images": target, "step": newest.step, "snapshots": len(snaps)}
    return outputs, info


def parse_sweep(text: str) -> list[float]:
    """``LO:HI:N`` -> N evenly spaced stds from LO to HI inclusive (``--sweep 0.02:0.2:10``)."""
    parts = text.split(":")
    try:
        lo, hi, count = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or count < 1:
            raise ValueError
    except (ValueError, IndexError):
        raise UserError(f"--sweep {text!r}: expected LO:HI:N, e.g. 0.02:0.2:10") from None
    if not (0 < lo < MAX_STD and 0 < hi < MAX_STD) or (count > 1 and hi <= lo):
        raise UserError(f"--sweep {text!r}: expected 0 < LO < HI < {MAX_STD:.4f}")
    return [float(v) for v in np.linspace(lo, hi, count)]


def _check_target(path: Path) -> None:
    """Refuse to replace a directory that is not a model this command wrote."""
    if not path.exists():
        return
    config = path / "config.json"
    ours = path.is_dir() and config.is_file() and "posthoc_ema" in json.loads(config.read_text() or "{}")
    if not ours:
        raise UserError(f"--out {path}: exists and is not a post-hoc EMA model; choose another --out")


def write_posthoc_models(run_dir: str | Path, stds: Sequence[float], outs: Sequence[str | Path],
                         images: int | None = None) -> list[Path]:
    """Reconstruct each std and write it as a genzoo model directory (``config.json`` +
    ``model.safetensors``, atomically), loadable by ``genzoo.load``, ``genzoo sample``, ``genzoo eval``."""
    from genzoo.checkpoints import read_json, resolve_model_dir, save_model_dir

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"RUN {run_dir}: no such run directory")
    outs = [Path(o) for o in outs]
    for out in outs:
        _check_target(out)
    list_snapshots(run_dir)
    try:
        config = read_json(resolve_model_dir(run_dir) / "config.json")
    except UserError as err:
        raise UserError(f"RUN {run_dir}: no checkpoint to take the model's config from ({err})") from None
    states, info = reconstruct(run_dir, stds, images)
    written = []
    for std, state, out in zip(stds, states, outs):
        meta = dict(config, posthoc_ema=dict(info, std=float(std), run=str(run_dir.resolve())))
        written.append(save_model_dir(out, meta, {"model": state}))
    return written

"""The training loop shared by every family: ``train(config) -> run directory``.

The family's objective says what to minimise; this module owns the rest: data order, optimisers,
gradient accumulation, precision, EMA, data-parallel processes, checkpoints, resuming and feedback.
See docs/training.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genzoo.checkpoints import list_checkpoints, load_state_into, write_json_atomic
from genzoo.errors import Terminated, UserError
from genzoo.family import get_family
from genzoo.seeds import StackedRandomGenerator
from genzoo.train import distributed as ddp
from genzoo.train.checkpoint import (
    TrainingCheckpoint,
    find_resumable,
    prune_checkpoints,
    remove_partial_checkpoints,
    rng_states,
    save_checkpoint,
    set_rng_states,
    to_json_safe,
)
from genzoo.train.config import other_differences, resolve_config, structural_differences
from genzoo.train.data import IndexedDataset, MicroBatchIndices, collate, mix_seed, to_batch
from genzoo.train.ema import EMA, EMARule
from genzoo.train.feedback import Feedback
from genzoo.train.objective import Objective, OptimizerSpec, learning_rate
from genzoo.train.parallel import GradientSync
from genzoo.train.phema import PowerFunctionEMA, parse_stds

# Separate seed streams, so e.g. the noise of step 5 never equals the dropout of step 5.
_STREAM_INIT, _STREAM_MICRO, _STREAM_SAMPLE = 1, 2, 3


def provenance(command_line: str | None = None) -> dict[str, str]:
    """genzoo's and torch's versions and the command line (``genzoo train`` sets it; else "python API")."""
    from genzoo.version import __version__

    return {"genzoo_version": __version__, "torch_version": torch.__version__,
            "command_line": command_line or "python API"}


class NonFiniteLoss(UserError):
    """The loss stayed NaN/Inf for ``--max-nonfinite`` consecutive updates."""


@dataclass
class Progress:
    """The training state that ``state.json`` saves."""

    step: int = 0
    images_seen: int = 0
    data_position: int = 0
    nonfinite_streak: int = 0
    train_seconds: float = 0.0
    last_checkpoint: str | None = None


def load_dataset(spec: str, resolution: int | None) -> Any:
    """``genzoo.data.load_dataset`` (imported late: the data package is optional for the engine)."""
    try:
        from genzoo.data import load_dataset as _load
    except ImportError as err:
        raise UserError(f"--data {spec}: the genzoo.data package is not available ({err})") from None
    return _load(spec, resolution)


def train(config: Mapping[str, Any], dataset: Any = None) -> Path:
    """Train as ``config`` says (keys = the ``genzoo train`` flags with underscores); returns the run dir.

    ``dataset`` (optional) replaces ``genzoo.data.load_dataset(config["data"])``: any sequence of
    ``(uint8 [C, H, W], label)`` with ``resolution``, ``num_channels``, ``num_classes`` and
    (optionally) ``captions`` attributes. Started by ``torchrun``, every process runs this function.
    SIGINT or SIGTERM finishes the current step, saves a checkpoint and raises ``KeyboardInterrupt`` or
    :class:`genzoo.errors.Terminated` (``--resume`` continues the run).
    """
    config = resolve_config(config)
    device = ddp.pick_device(config.get("device"), int(os.environ.get("LOCAL_RANK", "0")))
    if config["precision"] == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16: needs a CUDA device (fp16 training uses a CUDA grad scaler); "
                        "use --precision bf16 on CPU")
    dist = ddp.init_from_env(device)
    try:
        return Trainer(config, dataset, device, dist).run()
    finally:
        if dist.owns_group:
            torch.distributed.destroy_process_group()


class Trainer:
    """One training run (one process of it)."""

    def __init__(self, config: dict[str, Any], dataset: Any, device: torch.device, dist: ddp.Distributed):
        self.config, self.device, self.dist = config, device, dist
        self.out = Path(config["out"])
        self.seed = int(config["seed"])
        self.world = dist.world
        self.batch = int(config["batch"])
        per_device = config.get("batch_per_device") or self.batch // self.world
        if per_device < 1 or self.batch % (per_device * self.world):
            raise UserError(f"--batch {self.batch}: must be a multiple of --batch-per-device ({per_device}) "
                            f"x processes ({self.world})")
        self.per_device = int(per_device)
        self.rounds = self.batch // (self.per_device * self.world)
        workers = config.get("workers")
        # config.json records the values used, not "auto"
        config.update(batch_per_device=self.per_device,
                      workers=int(workers if workers is not None else 4 if device.type == "cuda" else 0))
        self.resume_from = self._checkpoint_to_resume()

        torch.manual_seed(mix_seed(self.seed, _STREAM_INIT))
        if dataset is None:
            dataset = load_dataset(config["data"], config.get("resolution"))
        self.dataset = dataset
        if len(self.dataset) == 0:
            raise UserError(f"--data {config['data']}: the dataset is empty")
        self.family = get_family(config["family"])
        data_keys = {"num_classes": int(getattr(self.dataset, "num_classes", 0) or 0),
                     "resolution": int(getattr(self.dataset, "resolution", 0) or 0),
                     "channels": int(getattr(self.dataset, "num_channels", 3))}
        before = {key: config.get(key) for key in data_keys}
        self.objective: Objective = self.family.build_objective(config, self.dataset)
        config.update(sampled_player=self.objective.sampled_player, world_size=self.world)
        for key, value in data_keys.items():
            if config.get(key) == before[key]:  # unless the family set its own (e.g. an upsampler's)
                config[key] = value
        config.setdefault("arch", None)
        self.objective.to(device)
        for value in vars(self.objective).values():
            if isinstance(value, nn.Module):  # networks kept out of the module tree (a frozen teacher)
                value.to(device)
        if config["channels_last"]:
            self.objective.to(memory_format=torch.channels_last)
        self.objective.train()
        for name in self.objective.players:
            ddp.broadcast_module(self.objective.players[name], self.world)

        rule = EMARule.from_config(config)
        if rule.halflife_kimg is not None:
            config["ema_halflife_kimg"] = rule.halflife_kimg  # config.json shows the rule in use
        self.ema = EMA({n: self.objective.players[n] for n in self.objective.ema_players}, rule).to(device)
        stds = parse_stds(config.get("phema_stds")) if self.objective.ema_players else ()
        self.phema = PowerFunctionEMA({n: self.objective.players[n] for n in self.objective.ema_players},
                                      stds).to(device) if stds else None
        # after the EMA copies (whole networks), before the optimisers (FSDP's parameters are shards)
        self.sync = GradientSync(self.objective, self.world, device, bool(config.get("fsdp")))
        self.specs: dict[str, OptimizerSpec] = self.objective.optimizer_specs()
        self.optimizers = {name: _make_optimizer(self.objective.players[name], spec)
                           for name, spec in self.specs.items()}
        self.scalers = {name: torch.amp.GradScaler("cuda") for name in self.specs} \
            if config["precision"] == "fp16" else {}
        self.progress = Progress()
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.feedback = Feedback(self.out, config, enabled=dist.is_main, start_step=self.progress.step)

    # ------------------------------------------------------------------ setup

    def _summary(self) -> str:
        """The one line before training: model, family, device, key settings."""
        c = self.config
        what = "/".join(str(c[k]) for k in ("precond", "arch", "mode") if c.get(k))
        until = f"{c['steps']} steps" if c.get("steps") is not None else f"{c['minutes']:g} minutes"
        return (f"{c['family']} ({what}) on {self.device}, {self.world} process(es), data {c['data']}, "
                f"batch {self.batch}, {c['precision']}, until {until} -> {self.out}")

    def record(self) -> dict[str, Any]:
        """What ``config.json`` holds: every option with the value this run applies (defaults resolved:
        the EMA rule, the learning-rate ramp-up, the family's network, ...), none that does not apply to it.
        An option left unset is left out: unset is the off state of the options that have no value when
        off (``--grad-clip``, ``--minutes``, ``--phema-snapshot-kimg``, ...); see docs/training.md."""
        record = dict(self.config)
        warmups = {float(spec.warmup_images) for spec in self.specs.values()}
        if record.get("lr_warmup_kimg") is None and len(warmups) == 1:
            record["lr_warmup_kimg"] = warmups.pop() / 1000  # the objective's own ramp-up, the one applied
        if not self.ema.players:  # no averaged player: no EMA, no post-hoc EMA
            for key in ("ema", "ema_start", "ema_halflife_kimg", "ema_rampup", "phema_stds",
                        "phema_snapshot_kimg"):
                record.pop(key, None)
        elif self.ema.rule.halflife_kimg is not None:  # EDM's rule: a constant decay does not apply
            record.pop("ema", None)
            record.pop("ema_start", None)
        else:
            record.pop("ema_rampup", None)
        if self.phema is None:
            record.pop("phema_snapshot_kimg", None)
        record = self.family.record_config(record)
        return to_json_safe({key: value for key, value in record.items() if value is not None})

    def say(self, message: str) -> None:
        if self.dist.is_main:
            print(f"genzoo train: {message}", file=sys.stderr, flush=True)

    def _checkpoint_to_resume(self) -> TrainingCheckpoint | None:
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: exists and is not a directory")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            for path in remove_partial_checkpoints(self.out):
                self.say(f"removed {path.name}, an unfinished checkpoint of an interrupted save")
        ddp.barrier(self.world)
        existing = list_checkpoints(self.out)
        if not self.config["resume"]:
            if existing:
                raise UserError(f"--out {self.out}: already holds checkpoints ({existing[-1].name}); pass "
                                "--resume to continue that run or choose another --out")
            return None
        checkpoint = find_resumable(self.out, self.say)
        if checkpoint is None:
            self.say(f"--resume: no checkpoint in {self.out} yet; starting from scratch")
        return checkpoint

    def _restore(self, ckpt: TrainingCheckpoint) -> None:
        problems = structural_differences(ckpt.config, self.config)
        if problems:
            raise UserError(f"--resume {ckpt.path}: the checkpoint does not fit this config:\n  "
                            + "\n  ".join(problems))
        saved, current = ckpt.config, self.record()
        if any(value is None for value in saved.values()):
            # an older config.json: null stood for "unset" and may be resolved now; compare what both record
            saved = {k: v for k, v in saved.items() if v is not None and k in current}
            current = {k: v for k, v in current.items() if k in saved}
        changed = other_differences(saved, current)
        if changed:
            self.say(f"--resume: settings changed since {ckpt.path.name} (the run continues with the new "
                     "ones): " + "; ".join(changed))
        with self.sync.full(write_back=True):
            load_state_into(self.objective.players, ckpt.model, str(ckpt.path / "model.safetensors"))
        if self.ema.players:
            load_state_into(self.ema.players, ckpt.ema, str(ckpt.path / "ema.safetensors"))
        if self.phema is not None:
            if ckpt.phema:
                load_state_into(self.phema, ckpt.phema, str(ckpt.path / "phema.safetensors"))
            else:
                self.phema.reset(self.objective.players)
                self.say(f"--resume: {ckpt.path.name} has no post-hoc EMA averages; they start from its "
                         "weights")
        other = _objective_state(self.objective)
        if other or ckpt.objective:
            wrapper = _StateView(other)
            load_state_into(wrapper, ckpt.objective, str(ckpt.path / "objective.safetensors"))
        saved_opt = ckpt.optimizer.get("optimizers", {})
        for name, opt in self.optimizers.items():
            if name not in saved_opt:
                raise UserError(f"{ckpt.path / 'optimizer.pt'}: no optimiser state for player {name!r}")
            try:
                self.sync.load_optimizer_state(opt, saved_opt[name])
            except (ValueError, KeyError) as err:
                raise UserError(f"{ckpt.path / 'optimizer.pt'}: optimiser state of {name!r} does not fit "
                                f"({err})") from None
        for name, scaler in self.scalers.items():
            if name in ckpt.optimizer.get("scalers", {}):
                scaler.load_state_dict(ckpt.optimizer["scalers"][name])
        s = ckpt.state
        self.progress = Progress(step=int(s["step"]), images_seen=int(s["images_seen"]),
                                 data_position=int(s["data_position"]),
                                 nonfinite_streak=int(s.get("nonfinite_streak", 0)),
                                 train_seconds=float(s.get("train_seconds", 0.0)),
                                 last_checkpoint=str(ckpt.path))
        if "rng" in s and self.world == int(ckpt.config.get("world_size", 1)):
            set_rng_states(s["rng"])
        self.say(f"resumed from {ckpt.path} at step {self.progress.step}")

    # ------------------------------------------------------------------ loop

    def run(self) -> Path:
        config, p = self.config, self.progress
        config.update(provenance(config.get("command_line")), device=str(self.device))  # what ran it, where
        if self.dist.is_main:
            write_json_atomic(self.out / "config.json", self.record())
            self.say(self._summary())
        target = config.get("steps")
        budget = config["minutes"] * 60 if config.get("minutes") is not None else math.inf
        if target is not None and p.step >= target:
            self.say(f"already at step {p.step} (--steps {target}); nothing to train")
            return self.out
        loader = iter(self._loader())
        start = time.monotonic()
        self.feedback.start(p.step, target, budget, started=start)
        restore_signals = self._stop_on_signals()
        try:
            while True:
                step_start = time.monotonic()
                logs = self._train_step(loader)
                p.train_seconds += time.monotonic() - step_start
                self.feedback.record(p.step, p.images_seen, logs, self.batch)
                done = target is not None and p.step >= target
                done = done or time.monotonic() - start >= budget or self.stop_signal is not None
                done = ddp.any_rank(done, self.world, self.device)
                if config["sample_every"] and p.step % config["sample_every"] == 0:
                    self._sample_grid()
                if (p.step % config["checkpoint_every"] == 0 or done) and p.nonfinite_streak == 0:
                    self._save()  # never amid NaN losses: the last good checkpoint stays the latest
                if done:
                    break
        finally:
            restore_signals()
            self.feedback.close()
        if self.stop_signal is not None:
            self.say(f"stopped by {self.stop_signal} at step {p.step}; continue with --resume --out "
                     f"{self.out}")
            # the caller asked to stop: a run that returned would pass for a finished one (the demo)
            raise KeyboardInterrupt() if self.stop_signal == "SIGINT" else Terminated()
        else:
            self.say(f"done: step {p.step}, {p.images_seen} images; run directory {self.out}")
        return self.out

    def _stop_on_signals(self) -> Callable[[], None]:
        """SIGINT/SIGTERM (Ctrl-C, a cluster's pre-emption notice) finish the current step, save a
        checkpoint and raise KeyboardInterrupt / :class:`~genzoo.errors.Terminated`; a second signal acts
        as usual. A signal the process ignores (a background job's SIGINT) stays ignored. Returns the
        function restoring the old handlers."""
        self.stop_signal: str | None = None
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous = {sig: old for sig, old in previous.items() if old is not signal.SIG_IGN}

        def handler(signum, frame):
            self.stop_signal = signal.Signals(signum).name
            for sig, old in previous.items():
                signal.signal(sig, old)
            self.say(f"{self.stop_signal}: stopping after this step and saving a checkpoint (again to abort)")

        for sig in previous:
            signal.signal(sig, handler)
        return lambda: [signal.signal(sig, old) for sig, old in previous.items()] and None

    def _loader(self):
        order = MicroBatchIndices(self.seed, len(self.dataset), self.batch, self.per_device, self.dist.rank,
                                  self.world, self.progress.data_position)
        return torch.utils.data.DataLoader(IndexedDataset(self.dataset), batch_sampler=order,
                                           collate_fn=collate, num_workers=self.config["workers"],
                                           pin_memory=self.device.type == "cuda")

    def _train_step(self, loader) -> dict[str, float]:
        """One training step: every (player, repeats) entry of the objective's schedule."""
        p = self.progress
        logs: dict[str, float] = {}
        update = 0
        for player, repeats in self.objective.schedule():
            for _ in range(int(repeats)):
                logs.update(self._update(player, update, loader))
                update += 1
        images_before = p.images_seen
        p.images_seen += self.batch
        with self.sync.full():
            if self.ema.players:
                logs["ema_beta"] = self.ema.update(self.objective.players, p.step, images_before, self.batch)
            if self.phema is not None:
                self.phema.update(self.objective.players, p.images_seen, self.batch)
        p.step += 1
        kimg = self.config.get("phema_snapshot_kimg")
        period = float(kimg or 0) * 1000
        if self.phema is not None and period and images_before // period != p.images_seen // period:
            self._save_phema_snapshots()
        return logs

    def _save_phema_snapshots(self) -> None:
        if self.dist.is_main and self.phema is not None:
            self.phema.write_snapshots(self.out, self.progress.step, self.progress.images_seen)

    def _update(self, player: str, update: int, loader) -> dict[str, float]:
        """Gradient of one global batch for ``player`` (accumulated, averaged over ranks), then its step."""
        p, config = self.progress, self.config
        net = self.objective.players[player]
        params = [q for q in net.parameters() if q.requires_grad]
        opt = self.optimizers[player]
        scaler = self.scalers.get(player)
        self.objective.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        loss_sum = torch.zeros((), device=self.device)
        for a in range(self.rounds):
            raw = next(loader)
            first = (a * self.world + self.dist.rank) * self.per_device
            n = len(raw["indices"])
            rng = StackedRandomGenerator(self.device, [mix_seed(self.seed, _STREAM_SAMPLE, p.step, update,
                                                                first + j) for j in range(n)])
            torch.manual_seed(mix_seed(self.seed, _STREAM_MICRO, p.step, update, a, self.dist.rank))
            batch = to_batch(raw, getattr(self.dataset, "captions", None), self.device,
                             config["channels_last"], rng)
            with self.sync.micro_batch(player, last=a == self.rounds - 1):
                with self._autocast():
                    result = self.sync.loss(player, batch, p.step)
                loss = result.loss.float()
                scaled = loss / self.rounds
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum += loss.detach()
            for k, v in result.logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) / self.rounds
        p.data_position += self.batch
        self.sync.finish(player, params)  # the flat all_reduce where DDP/FSDP did not reduce
        loss_mean = ddp.mean_over_ranks(loss_sum / self.rounds, self.world)
        logs = {(k if "/" in k else f"{player}/{k}"): v for k, v in sums.items()}
        logs[f"loss/{player}"] = float(loss_mean)
        if not torch.isfinite(loss_mean):
            p.nonfinite_streak += 1
            self.objective.zero_grad(set_to_none=True)
            if p.nonfinite_streak >= int(config["max_nonfinite"]):
                raise NonFiniteLoss(
                    f"stopped at step {p.step}: the {player} loss was NaN/Inf for {p.nonfinite_streak} "
                    f"consecutive updates (--max-nonfinite {config['max_nonfinite']}); the last good "
                    "checkpoint is "
                    f"{p.last_checkpoint or 'none (none was saved yet)'}; try a lower --lr, --grad-clip or "
                    "--precision fp32")
            return logs
        p.nonfinite_streak = 0
        spec = self.specs[player]
        warmup = (config["lr_warmup_kimg"] * 1000 if config.get("lr_warmup_kimg") is not None
                  else spec.warmup_images)
        lr = learning_rate(spec.lr, p.images_seen, warmup, spec.decay_images)  # on images seen so far
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_mul", 1.0)
        logs[f"lr/{player}"] = lr
        if scaler is not None:
            scaler.unscale_(opt)
        for q in params:
            if q.grad is not None:
                # EDM (training_loop.py): non-finite gradients replaced, nan by 0 and inf by +-1e5.
                torch.nan_to_num(q.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=q.grad)
        if config.get("grad_clip"):
            norm = torch.nn.utils.clip_grad_norm_(params, float(config["grad_clip"]))
            logs[f"{player}/grad_norm"] = float(norm)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        with self.sync.full():
            self.objective.after_update(player, p.step)
        return logs

    def _autocast(self):
        precision = self.config["precision"]
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ------------------------------------------------------------------ outputs

    def _save(self) -> None:
        p = self.progress
        path = self.out / f"checkpoint-{p.step:06d}"
        with self.sync.full():  # FSDP: gathered on every rank, written by rank 0
            model = self.objective.players.state_dict()
            optimizers = {n: self.sync.optimizer_state(o) for n, o in self.optimizers.items()}
        if self.dist.is_main:
            weights = {"model": model, "ema": self.ema.players.state_dict(),
                       "objective": _objective_state(self.objective),
                       "phema": self.phema.state_dict() if self.phema is not None else {}}
            optimizer_state = {"optimizers": optimizers,
                               "scalers": {n: s.state_dict() for n, s in self.scalers.items()}}
            state = {"step": p.step, "images_seen": p.images_seen, "data_position": p.data_position,
                     "nonfinite_streak": p.nonfinite_streak, "train_seconds": p.train_seconds,
                     "seed": self.seed, "world_size": self.world, "rng": rng_states()}
            try:
                save_checkpoint(path, self.record(), weights, optimizer_state, state)
            except OSError as err:
                raise UserError(f"{path}: cannot write the checkpoint ({err}); the previous checkpoint "
                                f"{p.last_checkpoint or '(none)'} is intact") from None
            self._save_phema_snapshots()  # after the checkpoint: a resume rewrites it identically
            prune_checkpoints(self.out, int(self.config["keep_last"]))
            self.feedback.note(f"saved {path.name}")
        p.last_checkpoint = str(path)
        ddp.barrier(self.world)

    @torch.no_grad()
    def _sample_grid(self) -> None:
        if not self.dist.is_main:
            return
        from genzoo.checkpoints.record import describe
        from genzoo.io import save_grid
        from genzoo.sampling import sample_with_defaults

        name = self.objective.sampled_player
        model = self.ema.players[name] if name in self.ema.players else self.objective.players[name]
        was_training = model.training
        describe(model, to_json_safe(self.config), "training", path=self.out)
        model.eval()
        try:
            images, _, _ = sample_with_defaults(model, self.config["sample_seeds"],
                                                batch_size=self.per_device,
                                                device=self.device)
        finally:
            model.train(was_training)
        path = save_grid(images, self.out / "samples" / f"step-{self.progress.step:06d}.png")
        self.feedback.note(f"sample grid {path.name}")


def _make_optimizer(net: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """Adam as the spec says (AdamW, decoupled decay, when ``weight_decay`` > 0); one parameter group per
    learning-rate multiplier of ``spec.lr_mul``."""
    groups: dict[float, list[torch.Tensor]] = {}
    for name, q in net.named_parameters():
        if q.requires_grad:
            groups.setdefault(parameter_lr_mul(name, spec.lr_mul), []).append(q)
    cls = torch.optim.AdamW if spec.weight_decay > 0 else torch.optim.Adam
    param_groups = [{"params": ps, "lr": spec.lr * mul, "lr_mul": mul} for mul, ps in groups.items()]
    return cls(param_groups, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps,
               weight_decay=spec.weight_decay)


def parameter_lr_mul(name: str, lr_mul: dict[str, float]) -> float:
    """The multiplier of the longest prefix in ``lr_mul`` that ``name`` starts with (1 when none does)."""
    matches = [prefix for prefix in lr_mul if name.startswith(prefix)]
    return float(lr_mul[max(matches, key=len)]) if matches else 1.0


def _objective_state(objective: Objective) -> dict[str, torch.Tensor]:
    """Persistent objective state outside the players (e.g. a consistency target network)."""
    return {k: v for k, v in objective.state_dict().items() if not k.startswith("players.")}


class _StateView(nn.Module):
    """Lets ``load_state_into`` check and copy a plain dict of tensors in place."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self._tensors = tensors

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return dict(self._tensors)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):  # noqa: D102
        with torch.no_grad():
            for k, v in state.items():
                self._tensors[k].copy_(v)

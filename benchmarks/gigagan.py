"""GigaGAN on CPU: does it draw what the prompt says, at what budget, against BigGAN? And the upsampler.

    python benchmarks/gigagan.py                                  # GigaGAN, 72k images, 4 curve points
    python benchmarks/gigagan.py --biggan                         # + BigGAN on the same image budget
    python benchmarks/gigagan.py --images 20000 --set match_negatives=rolled --set text_tokenizer=hash
    python benchmarks/gigagan.py --images 0 --upsampler            # only the upsampler table
    python benchmarks/gigagan.py --images 0 --clip 96000 --points 8  # the genzoo CLIP alone (zero-shot)
    python benchmarks/gigagan.py --images 72000 --points 6 --set d_init=he --set d_pool=max \
        --set clip_weight=1 --set clip_pretrain_images=96000 --set clip_negatives=shape,color,size,position

Budget: a number of training images (``--images``; the same for every model, whatever the machine's
load); the process CPU time each run took is printed beside it (one torch thread by default, so CPU
time is about the time an idle core needs).

1. Tokenizer probe: pairs of words of the shapes captions that share a token id (hashing vs vocabulary).
2. Trains ``--arch gigagan`` on ``shapes:16`` captions, keeping ``--points`` checkpoints. At each:
   conditional accuracy by the prompt's class (the bundled shapes classifier on 16 samples per class,
   prompts = held-out dataset captions), shape and colour accuracy separately, and the probes of
   :mod:`genzoo.gan.probes`: word-swap change of t_global (G's and D's text encoders) and of the image
   (z fixed), and D's matching accuracy per attribute on real images.
   With ``clip_pretrain_images`` the run first trains its CLIP (counted in its CPU minutes); its zero-shot
   accuracy on held-out images is printed.
3. ``--clip N``: the genzoo CLIP alone on N training pairs: zero-shot accuracy per attribute on 512
   held-out images (own caption against the captions with that attribute changed).
4. ``--biggan``: the demo's BigGAN recipe on the same images, its accuracy curve and CPU time.
5. ``--upsampler``: see :mod:`benchmarks.gigagan_upsampler` (the 4x table of docs/gigagan.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import genzoo
from genzoo.data import load_dataset
from genzoo.data.shapes import ATTRIBUTE_WORDS, COLOR_NAMES, caption_class
from genzoo.metrics.shapes_features import load_shapes_classifier
from genzoo.nets.text import HashTokenizer, VocabTokenizer, build_vocabulary
from genzoo.train.checkpoint import read_checkpoint
from genzoo.train.engine import train as run_training  # genzoo.train is shadowed by the subpackage

#: the GigaGAN recipe measured here (docs/gigagan.md, "Benchmark")
GIGAGAN = dict(batch=32, g_ch=32, d_ch=32, z_dim=32, w_dim=64, text_dim=64, text_depth=1, kernels=4,
               attn_res="8", precision="fp32")
#: the demo's BigGAN recipe (docs/demo.md): StyleGAN2 optimisation of the BigGAN networks
BIGGAN = dict(batch=32, g_ch=16, d_ch=16, z_dim=64, shared_dim=32, loss="ns", r1_gamma=0.1, g_lr=2e-3,
              d_lr=2e-3, betas="0,0.99", d_steps=1, precision="fp32")


def parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def train_run(arch: str, recipe: dict, images: int, points: int, data: str, out: Path) -> tuple[Path, float]:
    """Train ``arch`` for ``images`` images with ``points`` checkpoints; (run dir, process CPU minutes)."""
    steps = max(1, images // recipe["batch"])
    config = {"family": "gan", "arch": arch, "data": data, "out": str(out), "steps": steps,
              "sample_every": 0, "checkpoint_every": max(1, steps // points), "keep_last": points + 1,
              "log_every": 50, "seed": 0, "device": "cpu", "tensorboard": False, **recipe}
    start = cpu_seconds()
    run = run_training(config)
    return Path(run), (cpu_seconds() - start) / 60


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (data-loader workers), user + system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_clip_minutes(run: Path) -> float:
    """CPU minutes the run spent pretraining its CLIP (0 without one); prints the CLIP's zero-shot row."""
    from genzoo.gan.gigagan import CLIP_FILE
    from genzoo.nets.clip import load_clip

    if not (run / CLIP_FILE).is_file():
        return 0.0
    clip = load_clip(run / CLIP_FILE)
    print(f"\nthe run's CLIP ({clip.report}); zero-shot accuracy on 512 held-out images:")
    print(f"  {'':>26} | " + " | ".join(f"{a:>8}" for a in ATTRIBUTE_WORDS))
    print_zero_shot(f"{clip.report.get('images')} images", clip, held_out_pairs(clip.resolution))
    return float(clip.report.get("cpu_seconds", 0.0)) / 60


def checkpoints(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("checkpoint-*") if p.is_dir())


def images_seen(ckpt: Path) -> int:
    state = json.loads((ckpt / "state.json").read_text())
    return int(state.get("images_seen", 0))


def eval_prompts(resolution: int, per_class: int = 16) -> tuple[list[str], list[int]]:
    """Held-out captions (dataset seed 1), ``per_class`` for each of the 16 classes."""
    data = load_dataset(f"shapes:{resolution}?seed=1&count=4000")
    by_class: dict[int, list[str]] = {k: [] for k in range(16)}
    for i in range(len(data)):
        caption = data.captions[i]
        bucket = by_class[caption_class(caption)]
        if len(bucket) < per_class:
            bucket.append(caption)
    prompts = [c for k in range(16) for c in by_class[k]]
    return prompts, [caption_class(p) for p in prompts]


@torch.no_grad()
def accuracy(classifier, images: torch.Tensor, labels: list[int]) -> tuple[float, float, float]:
    """(class, shape, colour) accuracy of uint8 images against the asked-for classes."""
    pred = classifier(images)["logits"].argmax(1)
    want = torch.tensor(labels)
    n = len(COLOR_NAMES)
    return (float((pred == want).float().mean()), float((pred // n == want // n).float().mean()),
            float((pred % n == want % n).float().mean()))


def gigagan_probes(ckpt: Path, prompts: list[str], resolution: int) -> dict[str, dict[str, float]]:
    """The word-swap probes of G (EMA), G's and D's text encoders, and D's matching accuracy."""
    from genzoo.gan import gigagan, probes

    G = genzoo.load(ckpt)
    saved = read_checkpoint(ckpt)
    data = load_dataset(saved.config["data"])
    objective = gigagan.build_objective(dict(saved.config), data)
    objective.players.load_state_dict(saved.model)
    D = objective.players["D"]
    real = load_dataset(f"shapes:{resolution}?seed=1&count=256")
    images = torch.stack([real[i][0] for i in range(256)]).float() / 127.5 - 1
    captions = [real.captions[i] for i in range(256)]
    return {
        "t_global G": probes.text_swap_sensitivity(G.text, prompts, ATTRIBUTE_WORDS),
        "t_global D": probes.text_swap_sensitivity(D.text, prompts, ATTRIBUTE_WORDS),
        "image |dx|": probes.image_swap_sensitivity(G, prompts[:64], ATTRIBUTE_WORDS),
        "D match acc": probes.matching_accuracy(D, images, captions, ATTRIBUTE_WORDS),
    }


def curve(run: Path, prompts: list[str], labels: list[int], classifier, with_probes: bool) -> list[dict]:
    rows = []
    for ckpt in checkpoints(run):
        model = genzoo.load(ckpt)
        options = {"prompt": prompts} if genzoo.record_of(model).arch == "gigagan" else {}
        seeds = list(range(len(labels)))
        if options:
            images, _, _ = genzoo.sample(model, seeds, batch_size=64, **options)
        else:
            images, _, _ = genzoo.sample(model, seeds, class_labels=labels, batch_size=64)
        row = {"images": images_seen(ckpt), "acc": accuracy(classifier, images, labels)}
        if with_probes:
            row["probes"] = gigagan_probes(ckpt, prompts, genzoo.record_of(model).config["resolution"])
        rows.append(row)
    return rows


def print_curve(name: str, rows: list[dict], cpu_minutes: float, upfront_minutes: float = 0.0) -> None:
    """The learning curve; the CPU-minutes column is ``upfront_minutes`` (CLIP pretraining) plus the rest
    of the run's total pro rata of the images seen (the cost of a step does not change during training)."""
    total = rows[-1]["images"] if rows else 0
    print(f"\n{name}: {cpu_minutes:.1f} process CPU minutes for {total} images"
          + (f" (of which {upfront_minutes:.1f} CLIP pretraining)" if upfront_minutes else ""))
    print(f"{'images':>8} | {'CPU min':>7} | {'class acc':>9} | {'shape acc':>9} | {'colour acc':>10}")
    for r in rows:
        minutes = upfront_minutes + (cpu_minutes - upfront_minutes) * r["images"] / max(total, 1)
        acc = " | ".join(f"{a:{w}.3f}" for a, w in zip(r["acc"], (9, 9, 10)))
        print(f"{r['images']:8d} | {minutes:7.1f} | {acc}")
    probe_rows = [r for r in rows if "probes" in r]
    if probe_rows:
        attrs = list(ATTRIBUTE_WORDS)
        print(f"\nprobes (one attribute swapped): {'images':>8} | {'probe':>12} | "
              + " | ".join(f"{a:>8}" for a in attrs))
        for r in probe_rows:
            for probe, values in r["probes"].items():
                cells = " | ".join(f"{values.get(a, float('nan')):8.3f}" for a in attrs)
                print(f"{'':32}{r['images']:8d} | {probe:>12} | {cells}")


def reference_cnn(width: int = 32, norm: bool = True, pool: str = "max", he: bool = False) -> torch.nn.Module:
    """The bundled shapes classifier's body (conv-BN-ReLU, max-pooling; genzoo.metrics.shapes_features),
    with its BatchNorm and max-pooling switchable: the reference the D trunk is probed against. ``he``:
    leaky ReLU(0.2) and He-initialised convs (:func:`genzoo.nets.gigagan.he_init_`) instead of ReLU and
    PyTorch's default init."""
    import torch.nn as nn

    from genzoo.nets.gigagan import he_init_

    def unit(c_in: int, c_out: int) -> list[nn.Module]:
        act = nn.LeakyReLU(0.2) if he else nn.ReLU()
        return [nn.Conv2d(c_in, c_out, 3, padding=1), *([nn.BatchNorm2d(c_out)] if norm else []), act]

    down = (lambda: nn.MaxPool2d(2)) if pool == "max" else (lambda: nn.AvgPool2d(2))
    w = width
    body = nn.Sequential(*unit(3, w), *unit(w, w), down(), *unit(w, 2 * w), down(), *unit(2 * w, 4 * w),
                         down())
    if he:
        he_init_(body)
    return body


def d_shape_probe(recipe: dict, resolution: int, images: int, points: int = 4) -> None:
    """Can D's image path learn shape at all? Its trunk (fromRGB and the down stages at full resolution),
    globally averaged, plus a linear 4-way head, trained as a supervised shape classifier (cross-entropy,
    Adam at the GAN's lr 2e-3, beta (0, 0.99), batch 32) on real images; held-out shape accuracy against
    images, next to the reference CNN with and without BatchNorm / max-pooling. Chance is 0.25."""
    import torch.nn as nn
    import torch.nn.functional as F

    from genzoo.gan import gigagan
    from genzoo.nets.gigagan import lrelu

    data = load_dataset(f"shapes:{resolution}?count=8192")
    x = torch.stack([data[i][0] for i in range(len(data))]).float() / 127.5 - 1
    y = torch.as_tensor(data.shape_index[: len(data)])
    held = load_dataset(f"shapes:{resolution}?seed=1&count=512")
    hx = torch.stack([held[i][0] for i in range(512)]).float() / 127.5 - 1
    hy = torch.as_tensor(held.shape_index[:512])
    config = {"family": "gan", "arch": "gigagan", "data": f"shapes:{resolution}?count=64", **recipe}
    torch.manual_seed(0)  # every net starts from seed 0, whichever rows come before it
    D = gigagan.build_objective(config, load_dataset(config["data"])).players["D"]

    def trunk(images: torch.Tensor) -> torch.Tensor:
        h, res = D.from_rgb[str(resolution)](images), resolution
        while res > min(D.out_res):
            h, res = D.stages[str(res)](h), res // 2
        return lrelu(h).mean((2, 3))

    stage = D.stages[str(resolution)]
    label = (f"GigaGAN D trunk ({type(stage.norm1).__name__}, {stage.pool.__name__}, "
             f"init {recipe.get('d_init', 'torch')})")
    nets = {label: (trunk, list(D.parameters()), int(recipe["d_ch"]))}
    for name, norm, pool, he in (("reference CNN (BatchNorm, max-pool)", True, "max", False),
                                 ("reference CNN without BatchNorm", False, "max", False),
                                 ("reference CNN with average pooling", True, "avg", False),
                                 ("reference CNN without BatchNorm, He init, lReLU", False, "max", True)):
        torch.manual_seed(0)
        body = reference_cnn(norm=norm, pool=pool, he=he)
        nets[name] = (lambda t, body=body: body(t).mean((2, 3)), list(body.parameters()), 128)
    print("\nD shape probe (supervised 4-way shape accuracy on 512 held-out images, chance 0.25):")
    for name, (features, params, dim) in nets.items():
        torch.manual_seed(0)
        head = nn.Linear(dim, 4)
        opt = torch.optim.Adam(params + list(head.parameters()), lr=2e-3, betas=(0.0, 0.99))
        generator, seen, row = torch.Generator().manual_seed(0), 0, []
        checkpoints = [images * (k + 1) // points for k in range(points)]
        while seen < images:
            idx = torch.randint(len(x), (32,), generator=generator)
            loss = F.cross_entropy(head(features(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += 32
            if checkpoints and seen >= checkpoints[0]:
                checkpoints.pop(0)
                with torch.no_grad():
                    row.append(f"{seen}: {float((head(features(hx)).argmax(1) == hy).float().mean()):.2f}")
        print(f"  {name:55s} " + ", ".join(row))


def held_out_pairs(resolution: int, count: int = 512) -> tuple[torch.Tensor, list[str]]:
    """Held-out (dataset seed 1) images in [-1, 1] and their captions."""
    held = load_dataset(f"shapes:{resolution}?seed=1&count={count}")
    images = torch.stack([held[i][0] for i in range(count)]).float() / 127.5 - 1
    return images, [held.captions[i] for i in range(count)]


def print_zero_shot(label: str, model, held: tuple[torch.Tensor, list[str]]) -> None:
    from genzoo.train.clip import zero_shot_accuracy

    acc = zero_shot_accuracy(model, *held, ATTRIBUTE_WORDS)
    print(f"  {label:>26} | " + " | ".join(f"{acc[a]:8.3f}" for a in ATTRIBUTE_WORDS), flush=True)


def clip_curve(resolution: int, images: int, points: int) -> None:
    """The genzoo CLIP alone (as ``--clip-pretrain-images`` trains it, on the training pairs only): zero-shot
    accuracy per attribute on 512 held-out images -- its caption against the captions with only that
    attribute changed (chance: shape, colour 1/4, size 1/3, position 1/9) -- with process CPU minutes."""
    from genzoo.train.clip import cpu_seconds, pretrain_clip

    held = held_out_pairs(resolution)
    print(f"\ngenzoo CLIP on shapes:{resolution} training pairs, zero-shot accuracy on 512 held-out images")
    print(f"  {'images (CPU min)':>26} | " + " | ".join(f"{a:>8}" for a in ATTRIBUTE_WORDS))
    start, spent = cpu_seconds(), [0.0]

    def report(model, seen: int) -> None:
        before = cpu_seconds()
        print_zero_shot(f"{seen} ({(before - start - spent[0]) / 60:.2f})", model, held)
        spent[0] += cpu_seconds() - before  # the evaluation is not training time

    _, summary = pretrain_clip(load_dataset(f"shapes:{resolution}"), images, callback=report,
                               callback_every=max(64, images // points))
    print(f"  training report: {summary}")


def tokenizer_probe(resolution: int) -> None:
    from genzoo.gan.probes import tokenizer_collisions

    vocab = build_vocabulary(load_dataset(f"shapes:{resolution}?count=4000").captions)
    hashed = tokenizer_collisions(HashTokenizer(), vocab)
    listed = tokenizer_collisions(VocabTokenizer(vocab), vocab)
    print(f"tokenizer probe ({len(vocab)} words): colliding pairs: hashing {hashed}, vocabulary {listed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=72000, help="training images per model (default 72000)")
    parser.add_argument("--points", type=int, default=4, help="learning-curve checkpoints (default 4)")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--biggan", action="store_true", help="also BigGAN (demo recipe) on the same images")
    parser.add_argument("--biggan-images", type=int,
                        help="BigGAN's budget if not GigaGAN's (say, what it sees in GigaGAN's CPU time)")
    parser.add_argument("--no-gigagan", action="store_true", help="skip GigaGAN (e.g. only --biggan)")
    parser.add_argument("--eval-run", help="only evaluate the checkpoints of this GigaGAN run directory")
    parser.add_argument("--no-probes", action="store_true", help="skip the word-swap probes")
    parser.add_argument("--d-probe", type=int, default=0, metavar="IMAGES",
                        help="first train D's trunk as a supervised shape classifier on this many images, "
                        "against a reference CNN (does D's architecture learn shape at all?)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a GigaGAN training option, e.g. --set match_negatives=rolled")
    parser.add_argument("--clip", type=int, default=0, metavar="IMAGES",
                        help="first train the genzoo CLIP alone on this many training pairs and print its "
                        "zero-shot accuracy per attribute (curve of --points)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory() if not args.out else None
    root = Path(args.out or tmp.name)
    data = f"shapes:{args.resolution}"
    print(f"GigaGAN benchmark (torch {torch.__version__}, {torch.get_num_threads()} threads, {data})")
    tokenizer_probe(args.resolution)
    classifier = load_shapes_classifier()
    prompts, labels = eval_prompts(args.resolution)
    if args.clip:
        clip_curve(args.resolution, args.clip, args.points)
    if args.d_probe:
        d_shape_probe({**GIGAGAN, **parse_set(args.set)}, args.resolution, args.d_probe)
    if args.eval_run:
        print_curve(f"GigaGAN run {args.eval_run}", curve(Path(args.eval_run), prompts, labels, classifier,
                                                         not args.no_probes), float("nan"))
    elif args.images > 0:
        if not args.no_gigagan:
            recipe = {**GIGAGAN, **parse_set(args.set)}
            print(f"GigaGAN recipe: {recipe}")
            run, cpu = train_run("gigagan", recipe, args.images, args.points, data, root / "gigagan")
            upfront = run_clip_minutes(run)
            print_curve("GigaGAN", curve(run, prompts, labels, classifier, not args.no_probes), cpu, upfront)
        if args.biggan:
            images = args.biggan_images or args.images
            run, cpu = train_run("biggan", BIGGAN, images, args.points, data, root / "biggan")
            rows = curve(run, prompts, labels, classifier, False)
            print_curve(f"BigGAN (demo recipe, {images} images)", rows, cpu)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GANs: BigGAN, BigGAN-deep (``genzoo.nets.biggan``) and GigaGAN, with the pieces they share.

- :mod:`genzoo.gan.losses` — hinge / non-saturating losses, R1 penalty, orthogonal regularisation.
- :mod:`genzoo.gan.augment` — DiffAugment (differentiable augmentation for small datasets).
- :mod:`genzoo.gan.latents` — the truncated-normal sampler and latent/class interpolation.
- :mod:`genzoo.gan.family` — the ``gan`` family: training objective, sampling, standing statistics.
"""

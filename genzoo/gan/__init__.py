"""GANs: BigGAN, BigGAN-deep (``genzoo.nets.biggan``) and GigaGAN, with the pieces they share.

- :mod:`genzoo.gan.losses` — BigGAN's orthogonal regularisation (the adversarial losses, R1/R2 and the
  discriminator step are shared with other families in :mod:`genzoo.train.adversarial`).
- :mod:`genzoo.gan.gigagan` and :mod:`genzoo.gan.probes` — GigaGAN's objectives and controls; the
  word-swap probes of its text conditioning.
- :mod:`genzoo.gan.augment` — DiffAugment (differentiable augmentation for small datasets).
- :mod:`genzoo.gan.latents` — the truncated-normal sampler and latent/class interpolation.
- :mod:`genzoo.gan.family` — the ``gan`` family: training objective, sampling, standing statistics.
"""

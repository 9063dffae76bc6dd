"""Diffusion models in the EDM framework (Karras et al. 2022): preconditioning, losses, samplers, guidance.

A *denoiser* ``D(x, sigma, class_labels=None, **cond) -> x0_hat`` is the object every sampler, guidance
method and distillation takes; :mod:`genzoo.diffusion.precond` makes one from any registered network.
"""

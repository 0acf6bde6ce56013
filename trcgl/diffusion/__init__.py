"""Prompt-latent diffusion for tail classes (paper Sec. 3.1, Eq. 1-6).

``text`` (frozen encoder + learnable context vectors, Eq. 1-2), ``models`` (VAE and UNet
builders, classifier-free guidance, Eq. 4), ``training`` (Eq. 3: cached, resumable, EMA),
``pipeline`` (DDIM sampling and the saved diffusers pipeline, Eq. 5-6) and ``synthetic`` (the
filtered synthetic tail set, the oracle and the pathology-consistency score).
"""

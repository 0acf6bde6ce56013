"""Prompt-latent diffusion for tail classes (paper Sec. 3.1). This package grows chapter by chapter:
so far the text conditioning (Eq. 1-2)."""

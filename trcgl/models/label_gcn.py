"""The label co-occurrence graph and its two-layer GCN (paper Sec. 3.3, Eq. 15-24).

The adjacency follows the text: Q = YᵀY (Eq. 15), row normalisation (Eq. 16), symmetrisation
(Eq. 17), threshold τ (Eq. 18), self-loops (Eq. 19) and D^-½ Q D^-½ (Eq. 20). The text applies τ
to every entry; after row normalisation the diagonal Q_ii / Σ_j Q_ij is itself a value that τ can
zero, which the text does not discuss. By default the threshold applies to the off-diagonal
entries only (a class keeps its own co-occurrence with itself); ``threshold_diagonal=True`` applies
it to the diagonal as well, as a literal reading of Eq. 18 would.

:func:`released_label_adjacency` is the released code's graph, which differs from Eq. 16:
P_ij = Q_ij / (Q_ii + 1) (class i's count plus one instead of its row sum), 0.5 (P + Pᵀ), the
diagonal set to 1, entries below τ zeroed, + I (so the diagonal is 2), then D^-½ A D^-½. The same τ
therefore cuts a different quantity. :func:`adjacency` picks one by name (``model.adjacency``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import dense_to_sparse


def label_adjacency(Y: np.ndarray, tau: float = 0.02, threshold_diagonal: bool = False) -> np.ndarray:
    """A (C, C) from the training labels Y (N, C), Eq. 15-20."""
    Y = np.asarray(Y, dtype=np.float64)
    Q = Y.T @ Y                                                   # Eq. 15
    rows = Q.sum(axis=1, keepdims=True)
    Qn = np.divide(Q, rows, out=np.zeros_like(Q), where=rows > 0)  # Eq. 16
    Qn = (Qn + Qn.T) / 2                                          # Eq. 17
    keep = Qn >= tau                                              # Eq. 18
    if not threshold_diagonal:
        keep |= np.eye(len(Qn), dtype=bool)
    Qn = np.where(keep, Qn, 0.0)
    Qn = Qn + np.eye(len(Qn))                                     # Eq. 19
    d = Qn.sum(axis=1)
    inv = 1.0 / np.sqrt(d)
    return inv[:, None] * Qn * inv[None, :]                       # Eq. 20


def released_label_adjacency(Y: np.ndarray, tau: float = 0.02) -> np.ndarray:
    """A (C, C) as the released code builds it from the training labels Y (N, C)."""
    Y = np.asarray(Y, dtype=np.float64)
    Q = Y.T @ Y                                                   # Eq. 15
    P = Q / (np.diag(Q)[:, None] + 1.0)                           # P_ij = Q_ij / (Q_ii + 1)
    P = 0.5 * (P + P.T)                                           # Eq. 17
    np.fill_diagonal(P, 1.0)
    P = np.where(P < tau, 0.0, P)                                 # Eq. 18 (diagonal stays 1)
    P = P + np.eye(len(P))                                        # Eq. 19: diagonal 2
    inv = 1.0 / np.sqrt(P.sum(axis=1))
    return inv[:, None] * P * inv[None, :]                        # Eq. 20


def shuffled_label_adjacency(Y: np.ndarray, tau: float = 0.02, threshold_diagonal: bool = False,
                             seed: int = 0) -> np.ndarray:
    """The text's graph (Eq. 15-20) with its classes relabelled by a fixed random permutation: the
    same edge weights and degrees, each class joined to the wrong neighbours (a control for the
    label GCN: its capacity without the co-occurrence it claims to use)."""
    A = label_adjacency(Y, tau, threshold_diagonal)
    order = np.random.default_rng(seed).permutation(len(A))
    return A[np.ix_(order, order)]


#: ``model.adjacency``: the label graph the GCN propagates over (Y: the training labels)
ADJACENCIES = {
    "text": lambda Y, tau, diag: label_adjacency(Y, tau, diag),                    # Eq. 15-20
    "released": lambda Y, tau, diag: released_label_adjacency(Y, tau),             # the released script
    "identity": lambda Y, tau, diag: np.eye(np.asarray(Y).shape[1]),               # control: no neighbours
    "shuffled": lambda Y, tau, diag: shuffled_label_adjacency(Y, tau, diag),       # control: wrong neighbours
}


def adjacency(Y: np.ndarray, kind: str = "text", tau: float = 0.02, threshold_diagonal: bool = False) -> np.ndarray:
    """The label graph of ``model.adjacency`` (:data:`ADJACENCIES`)."""
    if kind not in ADJACENCIES:
        raise ValueError(f"model.adjacency must be one of {', '.join(ADJACENCIES)}, got {kind!r}")
    return ADJACENCIES[kind](Y, tau, threshold_diagonal)


class LabelGCN(nn.Module):
    """E1 = δ(A E0 W0), E2 = A E1 W1 (Eq. 21-22); s_label = g_r E2ᵀ + b (Eq. 24).

    E0 are learnable label embeddings (C × d). The two graph convolutions are torch-geometric
    ``GCNConv`` layers without their own normalisation (A is already normalised, Eq. 20) and
    without bias, so each is exactly A E W. ``score="cosine"`` uses cosine similarity times
    ``cosine_scale`` instead of the dot product. ``projection=True`` first maps g_r through a
    learned D × D linear map without bias ("projected into the same embedding space", Sec. 3.3).
    The released code's score is ``cosine`` with the projection and scale 1:
    s_label = cos(W g_r, E2_c) + b_c.
    """

    def __init__(self, adjacency: np.ndarray, out_dim: int, embed_dim: int = 256, hidden_dim: int = 256,
                 dropout: float = 0.0, score: str = "dot", cosine_scale: float = 10.0, projection: bool = False):
        super().__init__()
        A = torch.as_tensor(np.asarray(adjacency), dtype=torch.float32)
        edge_index, edge_weight = dense_to_sparse(A)
        self.register_buffer("A", A)
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_weight", edge_weight)
        C = A.shape[0]
        self.E0 = nn.Parameter(torch.randn(C, embed_dim) * embed_dim ** -0.5)
        self.conv1 = GCNConv(embed_dim, hidden_dim, normalize=False, add_self_loops=False, bias=False)
        self.conv2 = GCNConv(hidden_dim, out_dim, normalize=False, add_self_loops=False, bias=False)
        self.bias = nn.Parameter(torch.zeros(C))                 # b in Eq. 24
        self.dropout = nn.Dropout(dropout)
        if score not in ("dot", "cosine"):
            raise ValueError(f"score must be 'dot' or 'cosine', got {score!r}")
        self.score, self.cosine_scale = score, cosine_scale
        if projection:
            self.projection = nn.Linear(out_dim, out_dim, bias=False)

    def prototypes(self) -> torch.Tensor:
        """E2 (C × D): class prototypes after two rounds of message passing."""
        E1 = torch.relu(self.conv1(self.E0, self.edge_index, self.edge_weight))   # Eq. 21
        return self.conv2(self.dropout(E1), self.edge_index, self.edge_weight)    # Eq. 22

    def forward(self, g_r: torch.Tensor) -> torch.Tensor:
        E2 = self.prototypes()
        if hasattr(self, "projection"):
            g_r = self.projection(g_r)
        if self.score == "cosine":
            return self.cosine_scale * nn.functional.normalize(g_r, dim=-1) @ nn.functional.normalize(E2, dim=-1).T + self.bias
        return g_r @ E2.T + self.bias                                              # Eq. 24

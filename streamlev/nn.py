"""LevAttention for PyTorch: softmax attention over a few selected keys per head.

Optional extra ``torch``.  The core package never imports this module
(``import streamlev`` stays numpy-only); import it explicitly as
``streamlev.nn``.

Per head, the keys K (n x d_h) of each example are scored, the ``k_keep``
best are kept, and every query attends (softmax) to the kept keys only:

    out_i = Σ_{j ∈ S} softmax_j(q_i · k_j / √d_h) v_j,   |S| = k_keep.

Selection rules (``rule=``):

``"leverage"``
    top-k leverage scores τ_j = k_jᵀ(KᵀK)⁺k_j of the head's keys — the
    LevAttention rule.  Scores come from a Householder QR of the
    column-normalised keys followed by an SVD of the small triangular factor,
    in float64 by default (never from the Gram matrix KᵀK).
``"norm"``
    top-k key norms ‖k_j‖.
``"random"``
    k keys drawn uniformly without replacement (fresh draw every call).
``"first"``
    keys 0 .. k-1 (in a ViT with a class token: the class token and the
    first k-1 patches in raster order).
``"kmeans"``
    k-means on the head's keys (k-means++ seeding, a few Lloyd iterations);
    for each centroid the nearest not-yet-kept key is kept, so exactly k
    distinct keys are kept.

Gradients.  Selection is a discrete choice: scores are computed without
gradient (under :func:`torch.no_grad`, on detached keys).  Gradients flow
through the kept keys and values and through every query; a dropped key
receives no gradient from this head's attention, and a dropped value none
at all.  This matches how the selection is used in training (a
straight-through choice of which columns of the attention matrix exist).

With ``full=True`` (or ``k_keep >= n``) a :class:`LevAttention` is ordinary
softmax attention with the same parameters, so a model can be warm-started
with full attention and switched to selection later
(:func:`set_attention`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_positive_int

__all__ = [
    "RULES",
    "leverage_scores",
    "select_keys",
    "kmeans_select",
    "attend_kept",
    "full_attention",
    "LevAttention",
    "TinyViT",
    "set_attention",
]

#: Selection rules understood by :func:`select_keys` and :class:`LevAttention`.
RULES = ("leverage", "norm", "random", "first", "kmeans")


def _check_rule(rule) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return rule


def _check_keys(K, name: str = "K") -> torch.Tensor:
    if not isinstance(K, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (..., n, d), got {type(K).__name__}; "
            f"convert with torch.as_tensor({name})"
        )
    if K.ndim < 2:
        raise ValueError(
            f"{name} must have shape (..., n, d) with at least 2 dimensions, got shape "
            f"{tuple(K.shape)}; add a key axis with {name}.unsqueeze(0)"
        )
    if not K.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {K.dtype}; use {name}.float()")
    return K


def leverage_scores(K: torch.Tensor, *, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """Leverage scores of the rows of each key matrix in a batch.

    Parameters
    ----------
    K : torch.Tensor, shape (..., n, d)
        Keys; leading dimensions are batch dimensions (e.g. batch x heads).
    dtype : torch.dtype or None, default torch.float64
        Precision of the computation; ``None`` computes in K's own dtype.

    Returns
    -------
    torch.Tensor, shape (..., n), dtype ``dtype`` (or K's dtype)
        τ_j = k_jᵀ(KᵀK)⁺k_j in [0, 1], summing to rank(K) per matrix.

    Notes
    -----
    The columns of K are divided by their norms (leverage scores do not change
    under column scaling, and this removes outlier channels from the picture),
    then ``Kn = Q·R`` by a reduced Householder QR and ``R = U·S·Vᵀ`` by an SVD
    of the small min(n, d) x d factor.  ``Q·U`` are the left singular vectors
    of ``Kn``; τ_j is the squared norm of row j of its first r columns, where
    r counts the singular values ``> S_max·max(n, d)·machine-eps`` (the
    :func:`numpy.linalg.matrix_rank` rule after column scaling, as in
    :func:`streamlev.leverage_scores`).  For full-rank keys this equals the
    squared row norms of Q.  No Gram matrix and no matrix inverse are formed.
    Computed without gradient.  In float64 the scores agree with
    :func:`streamlev.leverage_scores` to ~1e-15 (absolute) on well-conditioned
    keys, column scales 1e-6..1e6 or a 1e4 outlier channel included, and to
    ~2e-11 at condition number 2e6 after column scaling (tests/test_nn.py).
    """
    K = _check_keys(K)
    with torch.no_grad():
        X = K.detach()
        if dtype is not None:
            X = X.to(dtype)
        n, d = X.shape[-2], X.shape[-1]
        if n == 0:
            return X.new_zeros(X.shape[:-1])
        norms = torch.linalg.vector_norm(X, dim=-2, keepdim=True)
        Xn = X / torch.where(norms > 0, norms, torch.ones_like(norms))
        Qf, R = torch.linalg.qr(Xn, mode="reduced")
        U, S, _ = torch.linalg.svd(R, full_matrices=False)
        tol = S[..., :1] * (max(n, d) * torch.finfo(X.dtype).eps)
        keep = (S > tol).to(X.dtype)  # (..., m); an all-zero K gives S_max = 0 and keeps nothing
        Y = Qf @ U
        return (Y * Y * keep.unsqueeze(-2)).sum(-1).clamp_(0.0, 1.0)


def kmeans_select(K: torch.Tensor, k: int, *, iters: int = 5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Select k distinct keys nearest the centroids of a k-means clustering, per matrix.

    Parameters
    ----------
    K : torch.Tensor, shape (..., n, d)
        Keys (treated as points in R^d, Euclidean distance).
    k : int
        Number of clusters and of keys kept, 1 <= k <= n.
    iters : int, default 5
        Lloyd iterations after k-means++ seeding.
    generator : torch.Generator, optional
        Random source of the k-means++ seeding.

    Returns
    -------
    torch.LongTensor, shape (..., k)
        Entry c is the key nearest centroid c among the keys not already kept
        for centroids 0..c-1 (so the k indices are distinct).  An empty cluster
        keeps its previous centroid.  Computed without gradient.
    """
    K = _check_keys(K)
    k = check_positive_int(k, "k")
    n, d = K.shape[-2], K.shape[-1]
    if k > n:
        raise ValueError(f"k must be <= the number of keys n = {n}, got k = {k}")
    with torch.no_grad():
        batch = K.shape[:-2]
        X = K.detach().reshape(-1, n, d).to(torch.float64)
        b = X.shape[0]
        ar = torch.arange(b)
        x2 = (X * X).sum(-1)  # (b, n)

        def sqdist(C):  # (b, n, c) squared distances from every key to every centre
            cross = X @ C.transpose(1, 2)
            return (x2.unsqueeze(-1) - 2.0 * cross + (C * C).sum(-1).unsqueeze(1)).clamp_min(0.0)

        # k-means++ seeding: each new centre is a key drawn with probability ∝ squared distance
        C = X.new_empty(b, k, d)
        first = torch.randint(n, (b,), generator=generator)
        C[:, 0] = X[ar, first]
        dmin = sqdist(C[:, :1]).squeeze(-1)  # (b, n)
        for c in range(1, k):
            # all keys coincide with chosen centres: fall back to uniform draws
            w = torch.where(dmin.sum(-1, keepdim=True) > 0, dmin, torch.ones_like(dmin))
            pick = torch.multinomial(w, 1, generator=generator).squeeze(-1)
            C[:, c] = X[ar, pick]
            dmin = torch.minimum(dmin, sqdist(C[:, c : c + 1]).squeeze(-1))
        # Lloyd iterations
        for _ in range(iters):
            assign = sqdist(C).argmin(-1)  # (b, n)
            onehot = F.one_hot(assign, k).to(X.dtype)  # (b, n, k)
            counts = onehot.sum(1)  # (b, k)
            newC = (onehot.transpose(1, 2) @ X) / counts.clamp_min(1.0).unsqueeze(-1)
            C = torch.where((counts > 0).unsqueeze(-1), newC, C)
        # nearest not-yet-kept key per centroid
        D = sqdist(C).transpose(1, 2).contiguous()  # (b, k, n)
        taken = torch.zeros(b, n, dtype=torch.bool)
        out = torch.empty(b, k, dtype=torch.long)
        for c in range(k):
            j = D[:, c].masked_fill(taken, math.inf).argmin(-1)
            out[:, c] = j
            taken[ar, j] = True
        return out.reshape(*batch, k).to(K.device)


def select_keys(
    K: torch.Tensor, k: int, rule: str = "leverage", *, kmeans_iters: int = 5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Select k keys per key matrix in a batch by a selection rule; returns their indices.

    Parameters
    ----------
    K : torch.Tensor, shape (..., n, d)
        Keys.
    k : int
        Keys kept, 1 <= k <= n.
    rule : {"leverage", "norm", "random", "first", "kmeans"}
        See the module docstring.
    kmeans_iters : int, default 5
        Lloyd iterations of the ``"kmeans"`` rule.
    generator : torch.Generator, optional
        Random source of the ``"random"`` and ``"kmeans"`` rules.

    Returns
    -------
    torch.LongTensor, shape (..., k)
        Distinct indices into the key axis (for score rules, in decreasing
        order of score).  Computed without gradient.
    """
    K = _check_keys(K)
    rule = _check_rule(rule)
    k = check_positive_int(k, "k")
    n = K.shape[-2]
    if k > n:
        raise ValueError(f"k must be <= the number of keys n = {n}, got k = {k}")
    with torch.no_grad():
        if rule == "leverage":
            scores = leverage_scores(K)
        elif rule == "norm":
            scores = torch.linalg.vector_norm(K.detach(), dim=-1)
        elif rule == "random":
            scores = torch.rand(K.shape[:-1], generator=generator, device=K.device)
        elif rule == "first":
            return torch.arange(k, device=K.device).expand(*K.shape[:-2], k).clone()
        else:
            return kmeans_select(K, k, iters=kmeans_iters, generator=generator)
        return scores.topk(k, dim=-1).indices


def attend_kept(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Softmax attention of every query over the kept keys only.

    Parameters
    ----------
    q : torch.Tensor, shape (..., m, d)
    k : torch.Tensor, shape (..., n, d)
    v : torch.Tensor, shape (..., n, e)
    idx : torch.LongTensor, shape (..., s)
        Kept key indices (e.g. from :func:`select_keys`).

    Returns
    -------
    torch.Tensor, shape (..., m, e)
        ``softmax(q k_Sᵀ / √d) v_S`` with S = idx.  Differentiable in q, k, v;
        rows of k and v outside S get zero gradient.
    """
    d = k.shape[-1]
    ks = torch.gather(k, -2, idx.unsqueeze(-1).expand(*idx.shape, d))
    vs = torch.gather(v, -2, idx.unsqueeze(-1).expand(*idx.shape, v.shape[-1]))
    logits = (q @ ks.transpose(-1, -2)) / math.sqrt(d)
    return logits.softmax(-1) @ vs


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Ordinary softmax attention ``softmax(q kᵀ / √d) v`` (the same arithmetic as :func:`attend_kept`)."""
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(k.shape[-1])
    return logits.softmax(-1) @ v


class LevAttention(nn.Module):
    """Multi-head self-attention over k selected keys per head; a drop-in for softmax attention.

    Parameters
    ----------
    dim : int
        Model width D (divisible by ``num_heads``).
    num_heads : int, default 4
    k_keep : int, default 8
        Keys kept per head and example.  When the sequence has <= k_keep
        tokens, attention is full.
    rule : {"leverage", "norm", "random", "first", "kmeans"}, default "leverage"
        Selection rule (module docstring).
    full : bool, default False
        Run full softmax attention (same parameters), e.g. for a warm start.
    qkv_bias : bool, default True
    kmeans_iters : int, default 5

    Notes
    -----
    ``forward(x)`` maps (B, n, D) -> (B, n, D).  After each call in selection
    mode, ``last_indices`` holds the kept indices, shape (B, heads, k_keep)
    (``None`` after a full-attention call).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        k_keep: int = 8,
        *,
        rule: str = "leverage",
        full: bool = False,
        qkv_bias: bool = True,
        kmeans_iters: int = 5,
    ):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        num_heads = check_positive_int(num_heads, "num_heads")
        if dim % num_heads:
            raise ValueError(
                f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}; "
                f"pick e.g. dim={num_heads * max(1, round(dim / num_heads))}"
            )
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.k_keep = check_positive_int(k_keep, "k_keep")
        self.rule = _check_rule(rule)
        self.full = bool(full)
        self.kmeans_iters = check_positive_int(kmeans_iters, "kmeans_iters", minimum=0)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.last_indices: torch.Tensor | None = None

    def extra_repr(self) -> str:
        """Summarise the mode for ``repr(module)``."""
        mode = "full" if self.full else f"rule={self.rule!r}, k_keep={self.k_keep}"
        return f"dim={self.dim}, num_heads={self.num_heads}, {mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output for tokens x of shape (B, n, D)."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (batch, tokens, {self.dim}), got {tuple(x.shape)}")
        B, n, D = x.shape
        qkv = self.qkv(x).reshape(B, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, h, n, dh)
        if self.full or self.k_keep >= n:
            self.last_indices = None
            out = full_attention(q, k, v)
        else:
            idx = select_keys(k, self.k_keep, self.rule, kmeans_iters=self.kmeans_iters)
            self.last_indices = idx
            out = attend_kept(q, k, v, idx)
        return self.proj(out.transpose(1, 2).reshape(B, n, D))


class _Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, *, k_keep, rule, full):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LevAttention(dim, heads, k_keep, rule=rule, full=full)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small pre-norm Vision Transformer whose attention layers are :class:`LevAttention`.

    Parameters
    ----------
    image_size : int, default 8
    patch : int, default 1
        Patch side; tokens = (image_size / patch)² + 1 (class token).
    in_chans : int, default 1
    num_classes : int, default 10
    dim : int, default 64
    depth : int, default 2
    heads : int, default 4
    mlp_ratio : float, default 2.0
    k_keep : int, default 8
    rule : str, default "leverage"
    full : bool, default True
        Start in full-attention mode (switch with :func:`set_attention`).
    embed_kernel : int, optional
        Kernel of the patch-embedding convolution; default ``patch``
        (non-overlapping patches).  A larger odd kernel (e.g. 3 with
        ``patch=1``) gives overlapping patches ("convolutional stem"): one
        token per patch still, each seeing its neighbourhood.

    Notes
    -----
    Patch embedding (a strided convolution), a learned class token and learned
    position embeddings, ``depth`` pre-norm blocks (LayerNorm -> attention ->
    residual, LayerNorm -> GELU MLP -> residual), a final LayerNorm and a
    linear head on the class token.
    """

    def __init__(
        self,
        image_size: int = 8,
        patch: int = 1,
        *,
        in_chans: int = 1,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        k_keep: int = 8,
        rule: str = "leverage",
        full: bool = True,
        embed_kernel: int | None = None,
    ):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch ({patch})")
        kernel = patch if embed_kernel is None else check_positive_int(embed_kernel, "embed_kernel")
        if kernel < patch or (kernel - patch) % 2:
            raise ValueError(f"embed_kernel must be patch plus an even number >= 0, got {kernel} with patch {patch}")
        self.n_tokens = (image_size // patch) ** 2 + 1
        self.embed = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=patch, padding=(kernel - patch) // 2)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(
            _Block(dim, heads, mlp_ratio, k_keep=k_keep, rule=rule, full=full) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits for images of shape (B, in_chans, H, W)."""
        x = self.embed(images).flatten(2).transpose(1, 2)  # (B, n-1, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def set_attention(
    model: nn.Module, *, full: bool | None = None, rule: str | None = None, k_keep: int | None = None
) -> nn.Module:
    """Switch every :class:`LevAttention` inside ``model`` (mode, rule, keys kept); returns ``model``."""
    if rule is not None:
        rule = _check_rule(rule)
    if k_keep is not None:
        k_keep = check_positive_int(k_keep, "k_keep")
    for m in model.modules():
        if isinstance(m, LevAttention):
            if full is not None:
                m.full = bool(full)
            if rule is not None:
                m.rule = rule
            if k_keep is not None:
                m.k_keep = k_keep
    return model

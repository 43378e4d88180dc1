"""Which cached tokens to keep: one eviction rule per policy, for every KV head at once, in torch.

:class:`KVSelector` is the engine behind :func:`streamlev.hf.compress` and the decoder study
(:mod:`streamlev.eval.decoder`).  It holds, per batch row and KV head, the absolute positions of the
kept tokens and whatever a policy accumulates (a float64 inverse Gram for the leverage policies,
accumulated attention for H2O), and at each :meth:`KVSelector.step` it receives the cached keys
(kept tokens followed by the ``m`` new ones) and returns, per head, the indices of the tokens to
keep.  Every head keeps the same number of tokens ``L`` (so the cache stays one dense tensor);
heads keep different tokens.

Selection rule (every policy): the protected tokens (the first ``sinks`` positions and the last
``window`` positions seen) are always kept; the others are ranked by the policy's score (larger
is kept; scores equal to 12 significant digits of the head's largest are ties, which go to
the older token) and the best fill the remaining ``L`` slots.  ``L`` is
``min(budget, tokens held)``, except for ``"universal"``, which keeps
``L = min(budget, max over heads of |protected ∪ {bound >= eps}|)``: a head whose universal set is
smaller than the largest one of its layer fills the slots with its next-largest scores, which
are below ``eps`` (they can never rise again: prefix scores only decrease, docs/design.md,
prefix monotonicity).  The bound is a certified upper bound on the *exact* prefix leverage,
τ_λ·(1 + λ/μ) with μ = 1/‖(G + λI)⁻¹‖_F − λ <= σ_min(G), widened by a rounding allowance
(infinite while μ <= 0): a token is
evicted for being below ``eps`` only when no later query can give it power attention ``>= eps``,
whatever the ridge.  Ranking (for the cap) uses the ridge scores.

Leverage scores (``"leverage"`` and ``"universal"``) are the prefix ridge leverage scores of the
key features f (post-RoPE keys as attended, or pre-RoPE keys; ``centred=True`` appends a
constant 1 to every feature, which makes the score 1/t + the leverage of the centred keys, the
same ranking as centring by the running mean): τ_j = f_jᵀ (Σ_{i<=t} f_i f_iᵀ + λI)⁻¹ f_j over
*all* t tokens seen, evicted ones included.  λ = ``ridge`` × the mean squared feature norm of the
first forward (so scores are invariant to scaling the keys).  The first forward factors its
Gram in float64 (Cholesky); every later forward of m tokens updates the float64 inverse Gram and
the held tokens' scores by Woodbury's identity: O(d²m + n·d·m + m³) per head, O(d² + n·d) per
decoded token, never a re-factorisation of the prefix.  With float64 accumulation the scores
carry a relative error of about cond(Gram)·1e-16 (keys in float32 or bfloat16 are converted
exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["POLICIES", "KVSelector"]

POLICIES = (
    "universal",
    "leverage",
    "streaming_llm",
    "h2o",
    "tova",
    "key_norm",
    "random",
    "kvpress_leverage",
)

_ROPE = ("post", "pre")
_JITTER_START = 1e-2  # kvpress's LeverageScorePress: first jitter added to the sketched Gram
_JITTER_TRIES = 5


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class KVSelector:
    """Keep at most ``budget`` tokens per KV head by one eviction policy.

    Parameters
    ----------
    policy : str or callable
        One of :data:`POLICIES` or a callable ``policy(keys, queries, positions) -> scores``:
        keys (B, H, n, d) as cached (kept then new), queries (B, Hq, m, d) of the current forward,
        positions (B, H, n) absolute; scores (B, H, n), larger is kept.
    budget : int
        Largest number of tokens kept per KV head after each step.
    sinks, window : int
        First positions and most recent positions always kept; ``sinks + window <= budget``.
    eps : float in (0, 1]
        Threshold of ``"universal"``: tokens whose certified bound on the exact prefix leverage
        is ``< eps`` are evicted (with power attention they can never get attention ``>= eps``).
    rope : {"post", "pre"}
        Leverage of the keys as attended (after the rotary embedding) or of the projections before
        it (``pre_keys`` must then be passed to :meth:`step`).
    centred : bool
        Leverage of ``[k, 1]`` (the centred keys' ranking).
    ridge : float >= 0
        Relative ridge (see the module docstring); 0 needs a full-rank first forward.
    sketch_dim : int
        Gaussian sketch size of ``"kvpress_leverage"``.
    seed : int
        Seed of ``"random"`` and of the sketch of ``"kvpress_leverage"``.
    """

    def __init__(
        self,
        policy: str | Callable = "universal",
        *,
        budget: int = 256,
        sinks: int = 4,
        window: int = 32,
        eps: float = 0.05,
        rope: str = "post",
        centred: bool = False,
        ridge: float = 1e-6,
        sketch_dim: int = 48,
        seed: int = 0,
    ):
        if not callable(policy) and policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES} or pass a callable")
        self.policy = policy
        self.budget = _check_int(budget, "budget", 1)
        self.sinks = _check_int(sinks, "sinks", 0)
        self.window = _check_int(window, "window", 0)
        if self.sinks + self.window > self.budget:
            raise ValueError(
                f"sinks + window = {self.sinks + self.window} exceeds budget = {self.budget}; "
                "lower sinks or window, or raise the budget"
            )
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < float(eps) <= 1.0:
            raise ValueError(f"eps must be a number in (0, 1], got {eps!r}")
        self.eps = float(eps)
        if rope not in _ROPE:
            raise ValueError(
                f"rope must be 'post' (keys as attended) or 'pre' (before the rotary embedding), got {rope!r}"
            )
        self.rope = rope
        self.centred = bool(centred)
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
            raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
        self.ridge = float(ridge)
        self.sketch_dim = _check_int(sketch_dim, "sketch_dim", 1)
        self.seed = int(seed)
        self.reset()

    # ------------------------------------------------------------------------------------------
    @property
    def needs_pre_keys(self) -> bool:
        """Whether :meth:`step` needs the keys before the rotary embedding."""
        return self.policy == "kvpress_leverage" or (self.policy in ("leverage", "universal") and self.rope == "pre")

    @property
    def needs_queries(self) -> bool:
        """Whether :meth:`step` needs the queries of the current forward."""
        return self.policy in ("h2o", "tova") or callable(self.policy)

    def reset(self) -> None:
        """Forget every token (a new sequence starts)."""
        self.seen = 0
        self.positions: torch.Tensor | None = None  # (B, H, n) absolute positions of the kept tokens
        self._P = None  # float64 inverse Gram (B, H, d', d')
        self._lam = None  # its ridge λ (B, H)
        self._trace = None  # trace of the Gram (B, H)
        self._feat = None  # float64 features of the kept tokens (leverage policies)
        self._score = None  # their current prefix scores
        self._acc = None  # accumulated attention (h2o)
        self._pre = None  # pre-RoPE keys of the kept tokens (kvpress_leverage)
        self._gen = None

    # ------------------------------------------------------------------------------------------
    def step(
        self,
        keys: torch.Tensor,
        n_new: int,
        queries: torch.Tensor | None = None,
        pre_keys: torch.Tensor | None = None,
        scaling: float | None = None,
    ) -> torch.Tensor:
        """Admit ``n_new`` tokens and choose the tokens to keep.

        Parameters
        ----------
        keys : Tensor (B, H, n, d)
            The cached keys after the rotary embedding: the kept tokens (in the order of
            :attr:`positions`) followed by the ``n_new`` new tokens.
        n_new : int
            Number of new tokens at the end of ``keys``.
        queries : Tensor (B, Hq, n_new, d), optional
            Queries of the new tokens after the rotary embedding (``Hq`` a multiple of ``H``);
            needed by ``"h2o"``, ``"tova"`` and callables.
        pre_keys : Tensor (B, H, n_new, d), optional
            The new tokens' keys before the rotary embedding (``rope="pre"``, ``"kvpress_leverage"``).
        scaling : float, optional
            Attention logit scale (default ``1/sqrt(d)``).

        Returns
        -------
        Tensor (B, H, L) of int64
            Indices into the token axis of ``keys``, increasing, of the tokens kept.
        """
        B, H, n, d = keys.shape
        m = int(n_new)
        held = 0 if self.positions is None else self.positions.shape[-1]
        if m < 1 or held + m != n:
            raise ValueError(
                f"keys hold {n} tokens but {held} are kept and n_new={n_new}; pass the kept keys then the new"
            )
        dev = keys.device
        new_pos = torch.arange(self.seen, self.seen + m, device=dev).expand(B, H, m)
        pos = new_pos.clone() if self.positions is None else torch.cat([self.positions, new_pos], dim=-1)
        self.seen += m
        if self.needs_pre_keys and pre_keys is None:
            raise ValueError(f"policy {self.policy!r} with rope={self.rope!r} needs pre_keys (keys before RoPE)")
        if self.policy in ("h2o", "tova") and queries is None:
            raise ValueError(f"policy {self.policy!r} needs the queries of the new tokens")
        score = self._scores(keys, m, queries, pre_keys, pos, scaling=scaling)
        protected = (pos < self.sinks) | (pos >= self.seen - self.window)
        if self.policy == "universal":
            core = protected | (self._leverage_bound(score) >= self.eps)
            L = min(self.budget, int(core.sum(-1).max()))
        else:
            L = min(self.budget, n)
        # scores equal to 12 digits of the head's largest are ties (duplicated tokens give equal
        # scores up to rounding), and ties go to the older token whatever the rounding did
        score64 = score.to(torch.float64)
        top = score64.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        rank = torch.where(protected, torch.full_like(score64, math.inf), torch.round(score64 / top * 1e12))
        order = torch.sort(rank, dim=-1, descending=True, stable=True).indices[..., :L]
        idx = torch.sort(order, dim=-1).values
        self.positions = pos.gather(-1, idx)
        for name in ("_feat", "_pre"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, t.shape[-1])))
        for name in ("_score", "_acc"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.gather(-1, idx))
        return idx

    # ------------------------------------------------------------------------------------------
    def _scores(self, keys, m, queries, pre_keys, pos, *, scaling) -> torch.Tensor:
        p = self.policy
        if callable(p):
            s = p(keys, queries, pos)
            if not isinstance(s, torch.Tensor) or s.shape != pos.shape:
                raise ValueError(f"a policy callable must return a tensor of shape {tuple(pos.shape)} (larger is kept)")
            return s
        if p in ("leverage", "universal"):
            new = pre_keys if self.rope == "pre" else keys[..., -m:, :]
            return self._leverage(new)
        if p == "streaming_llm":
            return pos.to(torch.float64)
        if p == "key_norm":
            return -torch.linalg.vector_norm(keys.to(torch.float64), dim=-1)
        if p == "random":
            if self._gen is None:
                self._gen = torch.Generator(device=keys.device).manual_seed(self.seed)
            return torch.rand(pos.shape, generator=self._gen, device=keys.device, dtype=torch.float64)
        if p in ("h2o", "tova"):
            probs = _attention_probs(keys, queries, m, scaling)  # (B, H, g, m, n)
            if p == "tova":
                return probs[..., -1, :].mean(dim=2).to(torch.float64)
            got = probs.sum(dim=(2, 3)).to(torch.float64)
            self._acc = got if self._acc is None else got + torch.nn.functional.pad(self._acc, (0, m))
            return self._acc
        # kvpress_leverage
        pre = pre_keys.to(torch.float32)
        self._pre = pre if self._pre is None else torch.cat([self._pre, pre], dim=-2)
        if self._gen is None:
            self._gen = torch.Generator(device=keys.device).manual_seed(self.seed)
        return _sketched_leverage(self._pre, self.sketch_dim, self._gen)

    def _leverage_bound(self, score: torch.Tensor) -> torch.Tensor:
        """Certified upper bounds on the exact prefix leverage of the held tokens, from their ridge scores.

        With G the Gram of every feature seen, P = (G + λI)⁻¹ and μ = 1/‖P‖_F − λ <= σ_min(G): for
        every query q, (q·f_j)² <= τ_λ,j (‖Fq‖² + λ‖q‖²) <= τ_λ,j (1 + λ/μ) ‖Fq‖², and neither
        side grows when later tokens arrive.  So a token whose bound τ_λ,j (1 + λ/μ) is below ε
        gets power attention below ε from every later query.  While μ <= 0 (G singular or too
        ill-conditioned to certify) the bound is infinite and nothing is evicted for being below ε.
        """
        lam = self._lam
        fro = torch.linalg.matrix_norm(self._P, ord="fro")  # (B, H): >= ‖P‖₂ = 1/σ_min(G + λI)
        mu = 1.0 / fro - lam
        factor = torch.where(mu > 0, 1.0 + lam / mu.clamp_min(torch.finfo(torch.float64).tiny), math.inf)
        # rounding: the float64 inverse and the scores carry a relative error of order D·u·κ(G + λI);
        # κ <= (trace G + Dλ)·‖P‖_F, and the bound is widened by eight times that (none below 1/2)
        D = self._P.shape[-1]
        rel = 8.0 * D * torch.finfo(torch.float64).eps * (self._trace + D * lam) * fro
        factor = torch.where(rel < 0.5, factor * (1.0 + rel), math.inf)
        bound = score * factor[..., None]
        return torch.where(torch.isnan(bound), math.inf, bound)

    def _leverage(self, new: torch.Tensor) -> torch.Tensor:
        F = new.to(torch.float64)
        if self.centred:
            F = torch.cat([F, torch.ones_like(F[..., :1])], dim=-1)
        D = F.shape[-1]
        eye = torch.eye(D, dtype=torch.float64, device=F.device)
        if self._P is None:
            lam = self.ridge * F.pow(2).sum(-1).mean(-1)  # (B, H)
            self._lam = lam
            self._trace = F.pow(2).sum(dim=(-1, -2))  # trace of the Gram of every feature seen (B, H)
            G = F.transpose(-1, -2) @ F + lam[..., None, None] * eye
            L, info = torch.linalg.cholesky_ex(G)
            if bool((info != 0).any()):
                raise ValueError(
                    "the keys of the first forward are rank-deficient and ridge=0: pass ridge > 0 "
                    "(relative to the mean squared key norm), or start with a longer prompt"
                )
            self._P = torch.cholesky_inverse(L)
            self._feat = F
            self._score = ((F @ self._P) * F).sum(-1)
            return self._score
        U = self._P @ F.transpose(-1, -2)  # (B, H, D, m)
        C = torch.eye(F.shape[-2], dtype=torch.float64, device=F.device) + F @ U
        Lc = torch.linalg.cholesky(C)
        W = torch.cholesky_solve(U.transpose(-1, -2), Lc)  # C⁻¹ Uᵀ  (B, H, m, D)
        self._P = self._P - U @ W
        self._P = 0.5 * (self._P + self._P.transpose(-1, -2))
        Y = self._feat @ U  # (B, H, n_held, m)
        drop = (Y * torch.cholesky_solve(Y.transpose(-1, -2), Lc).transpose(-1, -2)).sum(-1)
        s_new = ((F @ self._P) * F).sum(-1)
        self._score = torch.cat([self._score - drop, s_new], dim=-1)
        self._feat = torch.cat([self._feat, F], dim=-2)
        self._trace = self._trace + F.pow(2).sum(dim=(-1, -2))
        return self._score


def _attention_probs(keys, queries, m, scaling) -> torch.Tensor:
    """Softmax attention of the new queries over the cached keys (causal among the new), per group."""
    B, H, n, d = keys.shape
    Hq = queries.shape[1]
    if Hq % H:
        raise ValueError(f"{Hq} query heads are not a multiple of {H} KV heads")
    g = Hq // H
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    q = queries.to(torch.float32).reshape(B, H, g, m, d)
    logits = torch.einsum("bhgmd,bhnd->bhgmn", q, keys.to(torch.float32)) * scale
    qpos = torch.arange(m, device=keys.device) + (n - m)
    causal = torch.arange(n, device=keys.device)[None, :] <= qpos[:, None]  # (m, n)
    logits = logits.masked_fill(~causal, -math.inf)
    return torch.softmax(logits, dim=-1)


def _sketched_leverage(pre: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """The score of kvpress's LeverageScorePress: centred pre-RoPE keys, Gaussian sketch d -> k, float32 Cholesky."""
    B, H, n, d = pre.shape
    phi = torch.randn((B, H, d, k), generator=gen, device=pre.device, dtype=torch.float32) / math.sqrt(k)
    X = (pre - pre.mean(dim=-2, keepdim=True)) @ phi
    G = X.transpose(-1, -2) @ X
    G = 0.5 * (G + G.transpose(-1, -2))
    eye = torch.eye(k, dtype=G.dtype, device=G.device)
    jitter = _JITTER_START
    for _ in range(_JITTER_TRIES):
        L, info = torch.linalg.cholesky_ex(G + jitter * eye)
        if not bool((info != 0).any()):
            break
        jitter *= 10.0
    else:
        raise ValueError("the sketched Gram of kvpress_leverage is not positive definite even with jitter")
    Z = torch.cholesky_solve(X.transpose(-1, -2), L)
    return (X * Z.transpose(-1, -2)).sum(-1).clamp_min(0).to(torch.float64)

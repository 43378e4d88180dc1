"""Train a tiny ViT with LevAttention on scikit-learn's digits: the paper's from-scratch result in miniature.

Run ``python -m streamlev.eval.train`` (full study, several seeds) or
``python -m streamlev.eval.train --quick`` (one seed, short schedule, under
two minutes on 2 cores).  Needs the ``torch`` extra (torch, scikit-learn).

Data: the 1,797 8x8 grey-scale digits that ship inside scikit-learn (no
network), split once (stratified, 75% train / 25% test, ``random_state=0``);
pixels divided by 16 and standardised with the training mean and std.  Each
pixel is a token (1x1 patches), so the model sees n = 65 keys per head (64
pixels and a class token) and ``k`` of them are kept.

For each k and seed this trains, with identical data order and initialisation:

(a) ``full``      full softmax attention;
(b) ``scratch``   LevAttention (top-k leverage per head) from the first step;
(c) ``warm``      full attention for the first ``--warm`` fraction of steps
                  (default 15%), then LevAttention;
(d) ``inference`` model (a) evaluated with LevAttention switched on at test time
                  (no training);

and the same from-scratch training with the other per-head rules: key norm,
random, first-k and k-means.  Model (a) is also evaluated with each other
rule switched on at inference only.  The table reports test accuracy
(mean ± std over seeds) of the final model — no early stopping, no model
selection on the test set.  Learning curves (test accuracy and mean training
loss every ``--eval-every`` steps) go to the JSON file named by ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

__all__ = ["load_digits_split", "train_model", "evaluate", "run", "format_table", "verdicts", "main"]

#: Selection rules trained from scratch besides leverage.
OTHER_RULES = ("norm", "random", "first", "kmeans")


def load_digits_split(test_size: float = 0.25, random_state: int = 0):
    """Load the digits images as float32 tensors (N, 1, 8, 8), standardised, split train/test.

    Returns
    -------
    (X_train, y_train, X_test, y_test) : tuple of torch.Tensor
    """
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    X = data.images.astype(np.float32) / 16.0
    y = data.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=y, random_state=random_state)
    mu, sd = Xtr.mean(), Xtr.std()
    Xtr = (Xtr - mu) / sd
    Xte = (Xte - mu) / sd
    t = torch.from_numpy
    return t(Xtr[:, None].copy()), t(ytr), t(Xte[:, None].copy()), t(yte)


def evaluate(model, X, y, *, batch: int = 512) -> float:
    """Test accuracy of ``model`` on (X, y) in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for a in range(0, len(X), batch):
            correct += int((model(X[a : a + batch]).argmax(-1) == y[a : a + batch]).sum())
    model.train(was_training)
    return correct / len(X)


def _shift(images, gen, max_shift: int):
    """Random translation by up to ``max_shift`` pixels (zero padding), one shift per image."""
    import torch
    import torch.nn.functional as F

    if max_shift <= 0:
        return images
    B, _, H, W = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=float(images.min()))
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=gen)
    Wp = padded.shape[3]
    rows = (dy[:, None] + torch.arange(H)[None]).view(B, 1, H, 1).expand(B, 1, H, Wp)
    cols = (dx[:, None] + torch.arange(W)[None]).view(B, 1, 1, W).expand(B, 1, H, W)
    return torch.gather(torch.gather(padded, 2, rows), 3, cols)


def train_model(data, *, mode: str, rule: str, k: int, seed: int, steps: int, cfg: dict) -> dict:
    """Train one TinyViT and return its final test accuracy, learning curve and the model.

    Parameters
    ----------
    data : tuple
        Output of :func:`load_digits_split`.
    mode : {"full", "scratch", "warm"}
    rule : str
        Selection rule used in selection mode.
    k : int
        Keys kept per head.
    seed : int
        Seeds the initialisation, the batch order, augmentation and the random rules.
    steps : int
        Optimiser steps.
    cfg : dict
        Model and optimiser settings (see :func:`run`).
    """
    import torch
    import torch.nn.functional as F

    from streamlev.nn import TinyViT, set_attention

    Xtr, ytr, Xte, yte = data
    torch.manual_seed(seed)
    model = TinyViT(
        dim=cfg["dim"],
        depth=cfg["depth"],
        heads=cfg["heads"],
        mlp_ratio=cfg["mlp_ratio"],
        k_keep=k,
        rule=rule,
        full=(mode != "scratch"),
        embed_kernel=cfg["embed_kernel"],
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    warmup = max(1, int(0.05 * steps))

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    switch = int(round(cfg["warm"] * steps)) if mode == "warm" else -1
    gen = torch.Generator().manual_seed(seed)
    n = len(Xtr)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    curve = {"step": [], "test_acc": [], "train_loss": []}
    running, count = 0.0, 0
    model.train()
    for step in range(steps):
        if step == switch:
            set_attention(model, full=False)
        if pos + cfg["batch"] > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        idx = perm[pos : pos + cfg["batch"]]
        pos += cfg["batch"]
        xb = _shift(Xtr[idx], gen, cfg["shift"])
        loss = F.cross_entropy(model(xb), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        count += 1
        if (step + 1) % cfg["eval_every"] == 0 or step + 1 == steps:
            curve["step"].append(step + 1)
            curve["test_acc"].append(evaluate(model, Xte, yte))
            curve["train_loss"].append(running / count)
            running, count = 0.0, 0
    return {"acc": curve["test_acc"][-1], "curve": curve, "model": model}


DEFAULTS = {
    "dim": 64,
    "depth": 2,
    "heads": 4,
    "mlp_ratio": 2.0,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "batch": 64,
    "shift": 1,
    "embed_kernel": 3,
    "warm": 0.15,
    "eval_every": 50,
}


def _summarise(runs, ks) -> dict:
    summary = {}
    for k in ks:
        table = {}
        for r in runs:
            if r["k"] == k:
                table.setdefault(r["run"], []).append(r["acc"])
        if table:
            summary[f"k={k}"] = {
                name: {"mean": float(np.mean(a)), "std": float(np.std(a, ddof=1)) if len(a) > 1 else 0.0, "accs": a}
                for name, a in table.items()
            }
    return summary


def _dump(obj, path):
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)


def run(
    *, ks, seeds, steps: int, rules=OTHER_RULES, cfg: dict | None = None, log=print, out: str | None = None
) -> dict:
    """Run the whole study and return a JSON-serialisable results dict.

    ``results["runs"]`` holds one record per (k, seed, run name) with the
    final test accuracy and, for trained runs, the learning curve.
    ``results["summary"]`` maps ``"k=<k>"`` to {run name: {mean, std, accs}}
    (std with ddof=1; 0 for a single seed).  With ``out``, the results so far
    are rewritten to that JSON file after every run (``"complete": false``
    until the end), so an interrupted study keeps what it measured.
    """
    import torch

    from streamlev.nn import set_attention

    cfg = {**DEFAULTS, **(cfg or {})}
    data = load_digits_split()
    n_tokens = data[0].shape[-1] * data[0].shape[-2] + 1
    runs = []
    t0 = time.perf_counter()
    config = {
        **cfg,
        "steps": steps,
        "ks": list(ks),
        "seeds": list(seeds),
        "rules": list(rules),
        "n_tokens": n_tokens,
        "n_train": len(data[0]),
        "n_test": len(data[2]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }

    def results(complete):
        return {
            "config": config,
            "complete": complete,
            "runtime_s": time.perf_counter() - t0,
            "runs": runs,
            "summary": _summarise(runs, ks),
        }

    def record(k, seed, name, acc, curve=None):
        runs.append({"k": k, "seed": seed, "run": name, "acc": acc, "curve": curve})
        log(f"  k={k:<3d} seed={seed} {name:<30s} acc={acc:.4f}   [{time.perf_counter() - t0:6.1f} s]")
        if out:
            _dump(results(False), out)

    full_models = {}
    for seed in seeds:
        res = train_model(data, mode="full", rule="leverage", k=max(ks), seed=seed, steps=steps, cfg=cfg)
        full_models[seed] = res["model"]
        for k in ks:
            record(k, seed, "full softmax (a)", res["acc"], res["curve"])
    for k in ks:
        for seed in seeds:
            model = full_models[seed]
            for rule in ("leverage", *rules):
                set_attention(model, full=False, rule=rule, k_keep=k)
                torch.manual_seed(seed)
                name = "leverage, inference only (d)" if rule == "leverage" else f"{rule}, inference only"
                record(k, seed, name, evaluate(model, data[2], data[3]))
            set_attention(model, full=True)
            for mode, rule, name in [
                ("scratch", "leverage", "leverage, scratch (b)"),
                ("warm", "leverage", "leverage, warm (c)"),
                *[("scratch", r, f"{r}, scratch") for r in rules],
            ]:
                res = train_model(data, mode=mode, rule=rule, k=k, seed=seed, steps=steps, cfg=cfg)
                record(k, seed, name, res["acc"], res["curve"])
    res = results(True)
    if out:
        _dump(res, out)
    return res


def verdicts(results: dict) -> list[str]:
    """Answer in words: do (b) and (c) reach >= 90% of (a), and do they beat (d)."""
    lines = []
    for key, table in results["summary"].items():
        a = table["full softmax (a)"]["mean"]
        d = table["leverage, inference only (d)"]["mean"]
        for name in ("leverage, scratch (b)", "leverage, warm (c)"):
            m = table[name]["mean"]
            reach = "reaches" if m >= 0.9 * a else "misses"
            beat = "beats" if m > d else "does not beat"
            lines.append(f"{key}: {name}: {m:.3f} = {m / a:.1%} of (a) -> {reach} 90%; {beat} (d) = {d:.3f}")
    return lines


def format_table(results: dict) -> str:
    """Markdown table: one row per (k, run), test accuracy mean ± std over seeds and ratio to (a)."""
    n = results["config"]["n_tokens"]
    seeds = results["config"]["seeds"]
    ns = len(seeds)
    lines = [
        f"| k (of {n} keys) | run | test accuracy (mean ± std, {ns} seed{'s' * (ns > 1)}) | / full |",
        "|---|---|---|---|",
    ]
    for key, table in results["summary"].items():
        k = int(key.split("=")[1])
        a = table["full softmax (a)"]["mean"]
        for name, s in table.items():
            m, sd = s["mean"], s["std"]
            lines.append(f"| {k} ({k / n:.0%}) | {name} | {m:.3f} ± {sd:.3f} | {m / a:.2f} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streamlev.eval.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, k=8, a short schedule (under 2 minutes)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default 400, quick 100)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; quick 0)")
    p.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=None,
        dest="ks",
        help="keys kept per head (default 8 16, i.e. 12%% and 25%% of 65; quick 8)",
    )
    p.add_argument(
        "--rules",
        nargs="*",
        default=list(OTHER_RULES),
        choices=list(OTHER_RULES),
        help="other selection rules trained from scratch",
    )
    p.add_argument("--eval-every", type=int, default=None, help="steps between learning-curve points")
    p.add_argument(
        "--embed-kernel",
        type=int,
        default=DEFAULTS["embed_kernel"],
        help="patch-embedding kernel (3, the default: each pixel token sees its 3x3 "
        "neighbourhood; 1: plain per-pixel embedding, which trains far more slowly)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--out", default=None, help="write results and learning curves to this JSON file")
    return p


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        print("streamlev.eval.train needs PyTorch and scikit-learn: pip install 'streamlev[torch]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else (100 if args.quick else 400)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    ks = args.ks if args.ks is not None else ([8] if args.quick else [8, 16])
    for k in ks:
        if not 1 <= k < 65:
            raise SystemExit(f"--k values must be between 1 and 64 (the model has 65 keys per head), got {k}")
    if steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {steps}")
    cfg = {}
    if args.eval_every is not None:
        cfg["eval_every"] = args.eval_every
    elif args.quick:
        cfg["eval_every"] = 10
    cfg["embed_kernel"] = args.embed_kernel
    print(f"TinyViT on sklearn digits: steps={steps} seeds={seeds} k={ks} threads={args.threads}")
    results = run(ks=ks, seeds=seeds, steps=steps, rules=tuple(args.rules), cfg=cfg, out=args.out)
    print()
    print(format_table(results))
    print()
    for line in verdicts(results):
        print(line)
    print(f"\nruntime {results['runtime_s']:.1f} s")
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

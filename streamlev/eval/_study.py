"""What the decoder studies record: their JSON record and the perplexity rows of a masked run.

Shared by :mod:`streamlev.eval.decoder` (SmolLM2, softmax) and :mod:`streamlev.eval.power_decoder`
(the power-attention decoder).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path

__all__ = ["PerplexityTally", "ppl_row", "study_record"]


def study_record(benchmark: str, args, results: list, started: float, **parameters) -> dict:
    """The JSON record of a decoder study (the format of ``benchmarks/_common.py``).

    ``benchmark`` names the study (``python -m streamlev.eval.<benchmark>`` is the command);
    ``parameters`` are added to the command-line arguments ``args``.
    """
    import torch
    import transformers

    import streamlev

    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"python -m streamlev.eval.{benchmark} " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "os": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "streamlev": streamlev.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "parameters": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            **parameters,
            "elapsed_seconds": time.perf_counter() - started,
        },
        "results": results,
        "targets": [],
    }


class PerplexityTally:
    """Sums over the passages of one policy and budget: the log-likelihood past ``budget`` and the evicted attention."""

    def __init__(self, budget: int):
        self.budget = budget
        self.nll_sum, self.count, self.max_ev = 0.0, 0, 0.0
        self.loss_layers: dict[int, list] = {}

    def add(self, chunk, logits, run) -> None:
        """One masked forward of ``chunk`` (token ids (B, T)): its ``logits`` and run."""
        import torch

        b = self.budget
        lp = torch.log_softmax(logits[:, b:-1].double(), dim=-1)
        tgt = chunk[:, b + 1 :]
        self.nll_sum += float(-lp.gather(-1, tgt.unsqueeze(-1)).sum())
        self.count += tgt.numel()
        for li, v in run.loss.items():
            self.loss_layers.setdefault(li, []).append((v, chunk.shape[0]))
        self.max_ev = max([self.max_ev, *run.max_evicted.values()])

    def row(self, name: str, *, seconds: float) -> dict:
        """The result row: perplexity, attention loss (mean and per layer and KV head), largest evicted attention."""
        per_layer = {
            li: [sum(v[h] * w for v, w in vs) / sum(w for _, w in vs) for h in range(len(vs[0][0]))]
            for li, vs in sorted(self.loss_layers.items())
        }
        return ppl_row(
            name,
            self.budget,
            nll_sum=self.nll_sum,
            count=self.count,
            per_layer=per_layer,
            max_ev=self.max_ev,
            seconds=seconds,
        )


def ppl_row(name, budget, *, nll_sum, count, per_layer, max_ev, seconds) -> dict:
    """One perplexity row: ``nll_sum`` over ``count`` positions past ``budget``, attention loss per layer and head."""
    return {
        "task": "perplexity",
        "policy": name,
        "budget": budget,
        "ppl": math.exp(nll_sum / count),
        "positions": count,
        "attention_loss": (
            sum(sum(v) for v in per_layer.values()) / sum(len(v) for v in per_layer.values()) if per_layer else 0.0
        ),
        "attention_loss_per_layer_head": [per_layer[li] for li in sorted(per_layer)],
        "max_evicted_attention": max_ev,
        "seconds": seconds,
    }

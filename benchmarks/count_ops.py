"""Count the operator calls of one IDM training step on the CPU (a proxy for GPU kernel launches).

One step = forward (``model(y, op)``) + L1 loss + backward + Adam step, reversible mode, with random weights.
Launch overhead is what held the reference implementation back at small sizes (26,000 kernel launches per
step on an H200), and these counts show it without a GPU:

* ``profiler``: ``torch.profiler`` CPU events. ``aten_leaf`` counts aten ops that call no other aten op (each
  is roughly one kernel on a GPU); ``aten_total`` counts every aten event including composite ones.
* ``dispatch``: every aten op seen below autograd by a ``TorchDispatchMode`` (forward, recomputation and
  backward), split into ``compute`` (ops that run a kernel) and ``view`` (metadata-only ops, no kernel).

Per phase (``forward`` / ``backward`` / ``optimizer``) and the most frequent op names are reported. Prints one
JSON object (and writes it to ``--out`` when given).

    OMP_NUM_THREADS=1 python benchmarks/count_ops.py --layout small --size 64 --batch 2
    OMP_NUM_THREADS=1 python benchmarks/count_ops.py --layout small --size 64 --batch 2 --amp bf16
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _layouts import LAYOUTS, layout  # noqa: E402


def _is_view(op) -> bool:
    schema = op._schema
    if op.is_view:
        return True
    # ops returning an alias of an input (e.g. t, expand, as_strided, detach) launch no kernel
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


def count(args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils._python_dispatch import TorchDispatchMode

    from idm_imaging.models import IDM
    from idm_imaging.operators import BlockCS

    torch.manual_seed(0)
    model = IDM(backbone_config=layout(args.layout), T=args.T, reversible=not args.plain)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **{args.optimizer: True})
    op = BlockCS(args.ratio, block_size=32)
    x = torch.rand(args.batch, 1, args.size, args.size)
    y = op.A(x)
    amp = args.amp == "bf16"

    def step(mark=lambda name: torch.profiler.record_function(name)):
        with mark("forward"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                x_hat = model(y, op)
            loss = (x_hat.float() - x).abs().mean()
        with mark("backward"):
            loss.backward()
        with mark("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss

    step()  # warm-up: optimizer state, operator caches

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.compute, self.view = collections.Counter(), collections.Counter()

        def __torch_dispatch__(self, func, types, a=(), kw=None):
            (self.view if _is_view(func) else self.compute)[str(func.overloadpacket.__name__)] += 1
            return func(*a, **(kw or {}))

    phases = {}
    for phase in ("forward", "backward", "optimizer"):
        phases[phase] = Counter()

    import contextlib

    @contextlib.contextmanager
    def dispatch_mark(name):
        with phases[name]:
            yield

    t0 = time.perf_counter()
    step(dispatch_mark)
    dispatch_s = time.perf_counter() - t0
    disp = {p: {"compute": sum(c.compute.values()), "view": sum(c.view.values())} for p, c in phases.items()}
    all_compute = collections.Counter()
    for c in phases.values():
        all_compute.update(c.compute)

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    step_s = time.perf_counter() - t0
    events = prof.events()
    leaf, total = collections.Counter(), collections.Counter()
    by_phase = collections.Counter()
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        total[e.name] += 1
        if any(ch.name.startswith("aten::") for ch in e.cpu_children):
            continue
        leaf[e.name] += 1
        p = e.cpu_parent
        while p is not None and p.name not in phases:
            p = p.cpu_parent
        by_phase[p.name if p is not None else "other"] += 1

    return {
        "layout": args.layout, "size": args.size, "batch": args.batch, "T": args.T, "amp": args.amp,
        "reversible": not args.plain, "optimizer": args.optimizer, "channels_last": args.channels_last, "torch": torch.__version__,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "profiler": {"aten_leaf": sum(leaf.values()), "aten_total": sum(total.values()),
                     "aten_leaf_by_phase": dict(by_phase), "step_s_profiled": round(step_s, 3)},
        "dispatch": {"compute": sum(v["compute"] for v in disp.values()),
                     "view": sum(v["view"] for v in disp.values()), "by_phase": disp,
                     "step_s_counted": round(dispatch_s, 3)},
        "top_leaf_ops": dict(leaf.most_common(args.top)),
        "top_dispatch_compute_ops": dict(all_compute.most_common(args.top)),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="small")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--T", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--plain", action="store_true", help="plain autograd instead of the reversible engine")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--optimizer", choices=["fused", "foreach"], default="fused",
                   help="Adam implementation (the GPU runs use fused)")
    p.add_argument("--top", type=int, default=25, help="how many op names to list")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.size <= 0 or args.size % 32 or args.batch <= 0:
        p.error("--size must be a positive multiple of 32 and --batch positive")
    res = count(args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        from idm_imaging.io import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return res


if __name__ == "__main__":
    main()

"""PyTorch peer of benchmarks/src/native.ts: the same cases, the same sizes, timed the same way.

Usage: python3 native_peer.py '<json config>'  ->  one JSON object on stdout.

The config names the cases and sizes (see PeerConfig in native.ts):
  {"threadCounts": [1, 2], "warmup": 2, "minRepetitions": 5, "maxRepetitions": 20, "budgetMs": 3000,
   "cases": [{"name": "...", "kind": "matmul" | "ffn_gelu" | "ffn_swiglu" | "block" | "moe", ...sizes}]}

Each case builds its inputs once (fixed seed), then times forward + backward (with an explicit
upstream gradient) after warm-up runs; gradients are zeroed outside the clock. Times are medians in ms;
each case keeps the best of the thread counts asked for.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def gelu_ffn(t, d, f):
    x = torch.randn(t, d)
    w1 = (torch.randn(d, f) / d ** 0.5).requires_grad_()
    w2 = (torch.randn(f, d) / f ** 0.5).requires_grad_()
    dy = torch.randn(t, d)

    def step():
        y = F.gelu(x @ w1) @ w2  # exact (erf) GELU, as the kit's
        y.backward(dy)

    return step, [w1, w2]


def swiglu(h):
    a, b = h.chunk(2, dim=-1)
    return F.silu(a) * b


def swiglu_ffn(t, d, f):
    x = torch.randn(t, d).requires_grad_()
    up = (torch.randn(d, 2 * f) / d ** 0.5).requires_grad_()
    down = (torch.randn(f, d) / f ** 0.5).requires_grad_()
    dy = torch.randn(t, d)

    def step():
        y = swiglu(x @ up) @ down
        y.backward(dy)

    return step, [x, up, down]


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def block(t, d, f):
    x = torch.randn(t, d).requires_grad_()
    norm = torch.ones(d).requires_grad_()
    up = (torch.randn(d, 2 * f) / d ** 0.5).requires_grad_()
    down = (torch.randn(f, d) / f ** 0.5).requires_grad_()
    dy = torch.randn(t, d)

    def step():
        y = x + swiglu(rms_norm(x, norm, 1e-6) @ up) @ down
        y.backward(dy)

    return step, [x, norm, up, down]


def moe(t, d, f, experts, top_k):
    x = torch.randn(t, d).requires_grad_()
    router = (torch.randn(d, experts) / d ** 0.5).requires_grad_()
    ups = [(torch.randn(d, 2 * f) / d ** 0.5).requires_grad_() for _ in range(experts)]
    downs = [(torch.randn(f, d) / f ** 0.5).requires_grad_() for _ in range(experts)]
    dy = torch.randn(t, d)

    def step():
        probabilities = torch.softmax(x @ router, dim=-1)  # [T, E]
        top_values, top_indices = probabilities.topk(top_k, dim=-1)  # [T, K]
        gates = top_values / top_values.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(experts):
            token_ids, slot = torch.where(top_indices == e)
            if token_ids.numel() == 0:
                continue
            rows = x[token_ids]
            expert_out = swiglu(rows @ ups[e]) @ downs[e]
            out = out.index_add(0, token_ids, expert_out * gates[token_ids, slot, None])
        out.backward(dy)

    return step, [x, router, *ups, *downs]


def matmul(m, k, n):
    a = torch.randn(m, k)
    b = torch.randn(k, n)

    def step():
        a @ b

    return step, []


def build(case):
    kind = case["kind"]
    if kind == "matmul":
        return matmul(case["m"], case["k"], case["n"])
    if kind == "ffn_gelu":
        return gelu_ffn(case["tokens"], case["model"], case["hidden"])
    if kind == "ffn_swiglu":
        return swiglu_ffn(case["tokens"], case["model"], case["hidden"])
    if kind == "block":
        return block(case["tokens"], case["model"], case["hidden"])
    if kind == "moe":
        return moe(case["tokens"], case["model"], case["hidden"], case["experts"], case["topK"])
    raise ValueError(f"unknown case kind {kind!r}")


def time_case(case, config):
    torch.manual_seed(1)
    step, parameters = build(case)

    def run():
        for p in parameters:
            p.grad = None
        start = time.perf_counter()
        step()
        return (time.perf_counter() - start) * 1000

    last = 0.0
    for _ in range(config["warmup"]):
        last = run()
    fitting = int(config["budgetMs"] // last) if last > 0 else config["minRepetitions"]
    repetitions = min(config["maxRepetitions"], max(config["minRepetitions"], fitting))
    samples = [run() for _ in range(repetitions)]
    return {
        "medianMs": statistics.median(samples),
        "minMs": min(samples),
        "maxMs": max(samples),
        "repetitions": repetitions,
    }


def main():
    config = json.loads(sys.argv[1])
    # PyTorch's best thread count is not always the most: its OpenMP workers spin at every barrier, and
    # when another process holds the second core, 2 threads run 2-3x slower than 1. Time every case
    # with each count asked for and keep the faster, saying which.
    results = {}
    for threads in config["threadCounts"]:
        torch.set_num_threads(threads)
        for case in config["cases"]:
            measured = dict(time_case(case, config), threads=torch.get_num_threads())
            best = results.get(case["name"])
            if best is None or measured["medianMs"] < best["medianMs"]:
                results[case["name"]] = measured
    print(json.dumps({"torch": torch.__version__, "threadCounts": config["threadCounts"], "cases": results}))


if __name__ == "__main__":
    main()

"""PyTorch peer of benchmarks/src/native.ts: the same cases, the same sizes, timed the same way.

Usage: python3 native_peer.py '<json config>'  ->  one JSON object on stdout.

The config names the cases and sizes (see PeerConfig in native.ts):
  {"threadCounts": [1, 2], "warmup": 2, "minRepetitions": 5, "maxRepetitions": 20, "budgetMs": 3000,
   "cases": [{"name": "...", "kind": "matmul" | "ffn_gelu" | "ffn_swiglu" | "block" | "moe" | "lm" | "grouped_ffn", ...sizes}]}

Each case builds its inputs once (fixed seed), then times forward + backward (with an explicit
upstream gradient) after warm-up runs; gradients are zeroed outside the clock. The "lm" case is a
whole training step of a preset language model (forward, loss, backward, clipping, AdamW), the peer
of benchmarks/src/e2e.ts. Times are medians in ms;
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


class LanguageModel(torch.nn.Module):
    """A LLaMA-style decoder with dense, MoE or MoE++ FFN layers, shaped as @moepp/models' presets.

    Per layer: RMSNorm, causal multi-head attention with rotary embeddings, RMSNorm, then a dense SwiGLU
    FFN or an MoE++ layer: a linear router (plus the previous layer's logits through gate_map when the
    gating residual is on), logits divided by their std over experts, softmax, top-k, the zero expert's
    gate dropped and the rest renormalised; FFN experts (SwiGLU) on their tokens only, copy experts
    (gate * x), constant experts (softmax(W_c x) mixing x and a learned vector), the zero expert skipped.
    """

    def __init__(self, c):
        super().__init__()
        d, f, v = c["hidden"], c["intermediate"], c["vocab"]
        self.c = c
        self.heads = c["heads"]
        init = lambda *shape: torch.nn.Parameter(torch.randn(*shape) * 0.02)
        self.embed = init(v, d)
        self.head = init(d, v)
        self.final_norm = torch.nn.Parameter(torch.ones(d))
        self.layers = torch.nn.ModuleList()
        n_ffn = c["ffnExperts"]
        self.n_experts = n_ffn + c["constant"] + c["copy"] + c["zero"]
        for _ in range(c["layers"]):
            layer = torch.nn.Module()
            layer.attn_norm = torch.nn.Parameter(torch.ones(d))
            layer.ffn_norm = torch.nn.Parameter(torch.ones(d))
            layer.qkv = init(d, 3 * d)
            layer.out = init(d, d)
            if n_ffn == 0:
                layer.up = init(d, 2 * f)
                layer.down = init(f, d)
            else:
                layer.router = init(d, self.n_experts)
                layer.gate_map = init(self.n_experts, self.n_experts) if c["gatingResidual"] else None
                layer.ups = torch.nn.ParameterList([init(d, 2 * f) for _ in range(n_ffn)])
                layer.downs = torch.nn.ParameterList([init(f, d) for _ in range(n_ffn)])
                layer.const_mix = torch.nn.ParameterList([init(d, 2) for _ in range(c["constant"])])
                layer.const_vec = torch.nn.ParameterList([init(d) for _ in range(c["constant"])])
            self.layers.append(layer)
        t, half = c["seqLen"], d // c["heads"] // 2
        inv = 1.0 / (10000 ** (torch.arange(half) / half))
        angles = torch.arange(t)[:, None] * inv[None, :]
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())

    def rotate(self, x):  # [B, H, T, hd]
        a, b = x.chunk(2, dim=-1)
        return torch.cat([a * self.cos - b * self.sin, b * self.cos + a * self.sin], dim=-1)

    def attention(self, layer, x):  # [B, T, D]
        bsz, t, d = x.shape
        q, k, v = (x @ layer.qkv).split(d, dim=-1)
        shape = lambda y: y.view(bsz, t, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = self.rotate(shape(q)), self.rotate(shape(k)), shape(v)
        scores = (q @ k.transpose(-1, -2)) / (d // self.heads) ** 0.5
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        y = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v
        return y.transpose(1, 2).reshape(bsz, t, d) @ layer.out

    def moe(self, layer, x, previous):  # x [N, D]
        c = self.c
        n_ffn, n_const, n_copy = c["ffnExperts"], c["constant"], c["copy"]
        logits = x @ layer.router  # [N, E]
        if layer.gate_map is not None and previous is not None:
            logits = logits + previous @ layer.gate_map
        routing = logits / logits.std(dim=-1, keepdim=True)
        probabilities = torch.softmax(routing, dim=-1)
        gates, chosen = probabilities.topk(c["topK"], dim=-1)  # [N, K]
        if c["zero"] > 0:
            gates = gates * (chosen < self.n_experts - c["zero"])
            gates = gates / gates.sum(-1, keepdim=True).clamp_min(1e-30)
        out = torch.zeros_like(x)
        for e in range(n_ffn):
            token_ids, slot = torch.where(chosen == e)
            if token_ids.numel() == 0:
                continue
            rows = x[token_ids]
            expert_out = swiglu(rows @ layer.ups[e]) @ layer.downs[e]
            out = out.index_add(0, token_ids, expert_out * gates[token_ids, slot, None])
        for i in range(n_const):
            weight = (gates * (chosen == n_ffn + i)).sum(-1, keepdim=True)  # [N, 1]
            mix = torch.softmax(x @ layer.const_mix[i], dim=-1)
            out = out + weight * (mix[:, :1] * x + mix[:, 1:] * layer.const_vec[i])
        for i in range(n_copy):
            weight = (gates * (chosen == n_ffn + n_const + i)).sum(-1, keepdim=True)
            out = out + weight * x
        # Switch-style balance loss over all experts, as a stand-in of the kit's (same cost order)
        counts = torch.zeros(self.n_experts).index_add(0, chosen.flatten(), torch.ones(chosen.numel()))
        balance = self.n_experts * (counts / chosen.numel() * probabilities.mean(0)).sum()
        return out, logits, balance

    def forward(self, tokens, targets):
        x = self.embed[tokens]  # [B, T, D]
        bsz, t, d = x.shape
        previous, aux = None, 0.0
        for layer in self.layers:
            x = x + self.attention(layer, rms_norm(x, layer.attn_norm, 1e-6))
            h = rms_norm(x, layer.ffn_norm, 1e-6)
            if self.c["ffnExperts"] == 0:
                x = x + swiglu(h @ layer.up) @ layer.down
            else:
                y, previous, balance = self.moe(layer, h.reshape(bsz * t, d), previous)
                x = x + y.view(bsz, t, d)
                aux = aux + 0.01 * balance
        logits = rms_norm(x, self.final_norm, 1e-6) @ self.head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1)) + aux


def lm(c):
    model = LanguageModel(c)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(0, c["vocab"], (c["batch"], c["seqLen"] + 1))

    def step():
        loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss.item()

    return step, list(model.parameters())


def grouped_ffn(rows, d, f, experts):
    """E SwiGLU experts, each on its own block of `rows` rows: the per-expert loop of native.ts."""
    x = torch.randn(experts * rows, d).requires_grad_()
    ups = [(torch.randn(d, 2 * f) / d ** 0.5).requires_grad_() for _ in range(experts)]
    downs = [(torch.randn(f, d) / f ** 0.5).requires_grad_() for _ in range(experts)]
    dy = torch.randn(experts * rows, d)

    def step():
        blocks = x.split(rows, dim=0)
        y = torch.cat([swiglu(block @ ups[e]) @ downs[e] for e, block in enumerate(blocks)], dim=0)
        y.backward(dy)

    return step, [x, *ups, *downs]


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
    if kind == "grouped_ffn":
        return grouped_ffn(case["rows"], case["model"], case["hidden"], case["experts"])
    if kind == "lm":
        return lm(case)
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

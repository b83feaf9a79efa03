"""Monitor a small GPT the way language models are trained: AdamW with betas (0.9, 0.95), weight
decay 0.1 on the matrices and none on the norm gains and biases, a warm-up then cosine learning
rate; a character-level model of the text shipped with scikit-learn (its dataset descriptions).

    python examples/monitor_transformer.py --out runs/transformer
    thermosgd report runs/transformer # per matrix: norm and angle per step against the predictions

The model is a pre-norm decoder in the style of Qwen3, with its names (layers.0.self_attn.q_proj,
mlp.up_proj, lm_head; a GELU MLP and learned positions, for brevity) and no biases: RMSNorm before
each block, and QK-norm, an RMSNorm of each head's query and key over the head dimension. QK-norm
makes each head's rows of q_proj and k_proj a scale-invariant group: the attention logits do not
change when they are scaled. No other matrix is: the residual stream adds what v_proj, o_proj and
the MLP write, unnormalized, and lm_head (tied to the token embedding as in GPT-2, so its row is
embed_tokens.weight) feeds the loss. Those are predicted approximately, with AdamW's rotational
equilibrium (Kosson et al. 2024), which assumes what scale invariance guarantees: the gradient does
not push the norm. The norm relaxes in 1 / (2 eta lambda) = 1700 steps at the peak learning rate,
about this run's length; ``--steps 6000`` runs several. 43 kB of text is small: the model learns
much of it by heart, and the held-out loss (on the last tenth of the text) stays well above the
training loss.
"""

import argparse
import math
import time
from pathlib import Path

import sklearn
import torch
import torch.nn.functional as F
from torch import nn

import thermosgd


def shipped_text():
    """scikit-learn's dataset descriptions, 43 kB of English and reStructuredText."""
    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.rst")))


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)

    def forward(self, x):  # (B, T, C)
        b, t, c = x.shape
        shape = (b, t, self.heads, self.head_dim)
        q = self.q_norm(self.q_proj(x).view(shape)).transpose(1, 2)  # (B, H, T, head_dim)
        k = self.k_norm(self.k_proj(x).view(shape)).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.up_proj = nn.Linear(width, 4 * width, bias=False)
        self.down_proj = nn.Linear(4 * width, width, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(width)
        self.self_attn = Attention(width, heads)
        self.post_attention_layernorm = nn.RMSNorm(width)
        self.mlp = MLP(width)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, vocab, width=64, depth=2, heads=4, context=64):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, width)
        self.embed_positions = nn.Embedding(context, width)
        self.layers = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2's init: residual projections scaled by 1 / sqrt(2 depth)
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("o_proj.weight",
                                                                    "down_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx):  # (B, T) -> (B, T, vocab)
        x = self.embed_tokens(idx) + self.embed_positions(torch.arange(idx.shape[1]))
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def adamw(model, lr, weight_decay=0.1):
    """AdamW with the usual two parameter groups (nanoGPT, the Hugging Face Trainer): decay on
    the matrices, none on biases and norm gains (the tensors with fewer than two dimensions)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def warmup_cosine(optimizer, steps, warmup, floor=0.1):
    """Linear warm-up, then a cosine down to ``floor`` times the peak (nanoGPT's min_lr)."""
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
        return floor + (1 - floor) * cosine
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/transformer")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    text = shipped_text()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(ch) for ch in text])
    split = int(0.9 * len(data))
    train, held_out = data[:split], data[split:]
    model = GPT(len(chars), context=args.context)
    optimizer = adamw(model, args.lr)
    scheduler = warmup_cosine(optimizer, args.steps, warmup=max(args.steps // 20, 1))
    gen = torch.Generator().manual_seed(0)

    def batch(source):
        at = torch.randint(0, len(source) - args.context - 1, (args.batch_size,), generator=gen)
        x = torch.stack([source[i:i + args.context] for i in at])
        y = torch.stack([source[i + 1:i + args.context + 1] for i in at])
        return x, y

    start = time.perf_counter()
    with thermosgd.Monitor(model, optimizer, out=args.out, every=args.every,
                           overwrite=True) as monitor:
        for step in range(args.steps):
            x, y = batch(train)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        x, y = batch(held_out)
        held_out_loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    state = monitor.state()
    layers = state[state["level"] == "layer"]
    print(f"{args.steps} steps in {seconds:.0f} s: loss {loss.item():.3f} nats per character, "
          f"held out {held_out_loss:.3f}; {len(monitor.groups)} scale-invariant groups in "
          f"{int(layers['scale_invariant'].sum())} of {len(layers)} matrices")
    print(layers[["group", "d", "scale_invariant", "norm", "radius_theory_corrected",
                  "angular_update", "angular_update_theory", "regime"]].to_string(index=False))
    print(f"report: thermosgd report {args.out}   (writes {args.out}/report.html)")
    return monitor


if __name__ == "__main__":
    main()

"""The Monitor on a network that is not scale-invariant: a small pre-norm GPT under AdamW.

A character-level GPT (pre-LayerNorm blocks: attention and MLP added to the residual stream,
so no weight feeds a normalization and no group is scale-invariant) is trained on the text of
scikit-learn's dataset descriptions (``sklearn/datasets/descr/*.rst``, 43 kB shipped with the
package). Every weight matrix gets a row of its own; the Monitor predicts for it the
rotational equilibrium of AdamW (Kosson et al., 2024: the norm where weight decay's shrinking
balances the update's growth, r*^2 = eta d_eff / (2 lambda), and the rms angle per step
sqrt(2 eta lambda (1 - beta1) / (1 + beta1)), ``docs/optimizers.md``), which assumes what
scale invariance guarantees: the gradient does not push the norm, E[g . w] = 0. Here it is an
approximation, and this benchmark measures how good.

Per matrix, the rms angle per step over windows of logs against the prediction, and the norm
against r*, early (before one relaxation time 1 / (2 eta lambda)) and late (the last third of
training), with the gradient's radial push kappa (``radial_force``) that the approximation
neglects: the balance with it reads r^2 (1 + kappa) = r*^2. The figure shows angle / prediction
over training for every matrix.

Usage: python benchmarks/monitor_transformer.py [--steps 4000] [--out runs/gpt]
       [--figure benchmarks/figures/transformer_angles.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import thermosgd
from thermosgd.results import monitordir


def shipped_text() -> str:
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    return "\n".join(p.read_text() for p in sorted(folder.glob("*.rst")))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):  # (B, T, C)
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int, width: int = 64, depth: int = 2, heads: int = 4,
                 context: int = 64):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):  # (B, T) -> (B, T, vocab)
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def train(out: Path, steps: int, lr: float, wd: float, every: int, seed: int = 0):
    torch.manual_seed(seed)
    text = shipped_text()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(ch) for ch in text])
    model = GPT(len(chars))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    context, batch = 64, 32
    start = time.perf_counter()
    with thermosgd.Monitor(model, opt, out=out, every=every, noise_window=every,
                           overwrite=True) as mon:
        for step in range(steps):
            at = torch.randint(0, len(data) - context - 1, (batch,), generator=gen)
            x = torch.stack([data[i:i + context] for i in at])
            y = torch.stack([data[i + 1:i + context + 1] for i in at])
            loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 500 == 0:
                print(f"step {step}: loss {loss.item():.3f}", flush=True)
    print(f"{steps} steps in {time.perf_counter() - start:.0f} s; loss {loss.item():.3f}; "
          f"{len(mon.state())} rows per log")


def _rms(x):
    return float(np.sqrt(np.nanmean(np.square(x))))


def summarize(out: Path, lr: float, wd: float, figure: Path | None):
    metrics = monitordir.read_metrics(out)
    rows = metrics[(metrics["level"] == "layer") & ~metrics["scale_invariant"]]
    relax = 1.0 / (2 * lr * wd)  # AdamW's norm relaxes at rate 2 eta lambda
    last = rows["step"].max()
    table = []
    for name, m in rows.groupby("layer", sort=False):
        early, late = m[m["step"] <= relax], m[m["step"] > 2 * last / 3]
        pred = float(np.nanmean(late["angular_update_theory"]))
        table.append((name, int(m["d"].iloc[0]),
                      _rms(early["angular_update"]) / float(np.nanmean(early[
                          "angular_update_theory"])),
                      _rms(late["angular_update"]) / pred,
                      float(np.sqrt(np.mean(late["norm"] ** 2)
                                    / np.nanmean(late["radius_theory_corrected"] ** 2))),
                      float(np.nanmean(late["radial_force"])),
                      float(np.nanmean(late["radial_share"]))))
    print(f"relaxation time 1/(2 eta lambda) = {relax:.0f} steps; late = steps > {2 * last / 3:.0f}")
    # the balance with the gradient's radial push: r^2 (1 + kappa) = r*^2 (AdamW)
    print(f"{'matrix':28s} {'d':>6s} {'angle/pred early':>17s} {'late':>6s} {'r/r* late':>10s} "
          f"{'kappa':>7s} {'(1+kappa)^-1/2':>15s} {'radial share':>13s}")
    for name, d, ae, al, rr, kappa, radial in table:
        balance = (1 + kappa) ** -0.5 if kappa > -1 else float("nan")
        print(f"{name:28s} {d:6d} {ae:17.3f} {al:6.3f} {rr:10.3f} {kappa:7.3f} {balance:15.3f} "
              f"{radial:13.4f}")
    if figure is not None:
        _figure(rows, relax, figure)


def _figure(rows, relax, path: Path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    names = list(dict.fromkeys(rows["layer"]))
    cmap = __import__("matplotlib").colormaps["viridis"]
    for k, name in enumerate(names):
        m = rows[rows["layer"] == name].sort_values("step")
        # rms over 10 consecutive logs: one log's angle is one step's, a noisy sample
        ratio = (m["angular_update"] ** 2).rolling(10, min_periods=5).mean() ** 0.5 \
            / m["angular_update_theory"]
        ax.plot(m["step"], ratio, color=cmap(k / max(len(names) - 1, 1)), lw=1,
                label=name if k % 2 == 0 or len(names) < 12 else None)
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.axvline(relax, color="grey", lw=1, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("rms angle per step / predicted")
    ax.set_title("Pre-norm GPT under AdamW: each matrix against its rotational equilibrium")
    ax.legend(fontsize=6, ncols=2, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--wd", type=float, default=0.5)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/gpt"))
    parser.add_argument("--figure", type=Path,
                        default=Path("benchmarks/figures/transformer_angles.png"))
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.summarize_only:
        train(args.out, args.steps, args.lr, args.wd, args.every)
    summarize(args.out, args.lr, args.wd, args.figure)


if __name__ == "__main__":
    main()

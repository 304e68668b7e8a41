"""Benchmark, not a test: the Trainer's time per epoch against the blog's hand-written loop.

Same model, data, batch size, optimizer, schedule and steps. Runs are interleaved in pairs (the order alternating, so
a drift in the machine's speed favours neither); the ratio reported is the median of the pairs' ratios of CPU time
(process time: other tenants of a shared machine do not count), with wall-clock medians beside it.
Usage: python tests/train_overhead_bench.py [small_mlp|mlp|small_cnn|cnn ...] [--repeats N] [--epochs N] [--threads N]
"""
import argparse, statistics, time

import torch
from torch import nn

from mlpipe.data import get_dls
from mlpipe.model import create_model
from mlpipe.train import Trainer, seed_everything

MODELS = {'small_mlp': dict(name='mlp', hidden=(64,)), 'mlp': dict(name='mlp'),
          'small_cnn': dict(name='cnn', widths=(8, 16, 32)), 'cnn': dict(name='cnn', widths=(16, 32, 64))}

def hand_written(model, dls, epochs, lr=1e-3):
    "The blog's loop, with the same optimizer, schedule and validation as the Trainer's defaults."
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(dls.train))
    criterion = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        dls.train.set_epoch(epoch)
        model.train()
        running_loss = 0.0
        for x, y in dls.train:
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            running_loss += loss.item()
        model.eval()
        valid_loss, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in dls.valid:
                out = model(x)
                valid_loss += criterion(out, y).item() * len(y); correct += (out.argmax(1) == y).sum().item(); n += len(y)
        print(f'epoch {epoch + 1}: train_loss {running_loss / len(dls.train):.4f} valid_loss {valid_loss / n:.4f} accuracy {correct / n:.4f}')

def with_trainer(model, dls, epochs, lr=1e-3):
    # the hand-written loop's layout and precision: 'auto' would pick channels_last for the CNN, faster but other work
    Trainer(model, dls, lr=lr, device='cpu', precision='fp32', channels_last=False).fit(epochs)

def timed(fn, spec, dls, epochs):
    "CPU and wall-clock seconds per epoch of `fn` training a fresh model built from `spec`."
    seed_everything(0)
    model = create_model(**spec)
    cpu, wall = time.process_time(), time.perf_counter()
    fn(model, dls, epochs)
    return (time.process_time() - cpu) / epochs, (time.perf_counter() - wall) / epochs

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('models', nargs='*', default=['mlp'])
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dls = get_dls('fashion_mnist_sample', batch_size=256, device='cpu')
    for name in args.models:
        timed(hand_written, MODELS[name], dls, 1); timed(with_trainer, MODELS[name], dls, 1)  # warm up
        pairs = []
        for i in range(args.repeats):
            order = (hand_written, with_trainer) if i % 2 == 0 else (with_trainer, hand_written)
            result = {fn: timed(fn, MODELS[name], dls, args.epochs) for fn in order}
            pairs.append((result[hand_written], result[with_trainer]))
        ratio = statistics.median(trainer[0] / hand[0] for hand, trainer in pairs)
        hand, trainer = (statistics.median(p[i][1] for p in pairs) for i in (0, 1))
        print(f'RESULT {name}: Trainer/hand-written CPU time per epoch {ratio:.3f} (median of {args.repeats} pairs); '
              f'wall medians: hand-written {hand:.3f}s, Trainer {trainer:.3f}s per epoch of {len(dls.train)} steps of batch 256 + validation')

"""A small training run through the Python API, for tests/test_distributed.py: under torchrun it trains with DDP,
without it on one process. Rank 0 prints each optimizer step as it ends (so a test knows where the run is) and, at
the end, writes FOLDER/final.pt (the trainer's whole state) and FOLDER/result.json (history and test metrics).

Usage: [torchrun --nproc-per-node 2] python distributed_worker.py FOLDER [--batch-size 64] [--epochs 2] [--dropout 0]
       [--every 5] [--resume] [--die-at STEP | --hang-at STEP] [--prune 0.5]
"""
import argparse, json, os, time
from pathlib import Path

import torch

torch.set_num_threads(1)  # the same arithmetic in every process, and no contention on shared cores

from mlpipe.callbacks import Checkpoint, PruneEasy
from mlpipe.checkpoint import save_checkpoint
from mlpipe.loaders import get_dls
from mlpipe.core import get_rank, is_main_process
from mlpipe.distributed import setup_distributed, teardown_distributed
from mlpipe.eval import evaluate
from mlpipe.events import Callback
from mlpipe.model import create_model
from mlpipe.numerics import seed_everything
from mlpipe.train import Trainer


class Steps(Callback):
    "Print each step on rank 0; make rank 1 die or stop answering at a given step."
    def __init__(self, die_at=None, hang_at=None): self.die_at, self.hang_at = die_at, hang_at
    def after_step(self, trainer):
        if is_main_process(): print(trainer.step, flush=True)
        if get_rank() == 1 and trainer.step == self.die_at: os._exit(3)  # as if killed: no clean-up, no goodbye
        if get_rank() == 1 and trainer.step == self.hang_at: time.sleep(3600)  # alive, but never at the next exchange


def main():
    p = argparse.ArgumentParser()
    p.add_argument('folder')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--dropout', type=float, default=0.0)
    p.add_argument('--every', type=int, default=None)
    p.add_argument('--resume', action='store_true')
    p.add_argument('--die-at', type=int, default=None)
    p.add_argument('--hang-at', type=int, default=None)
    p.add_argument('--prune', type=float, default=0.0)
    args = p.parse_args()
    folder = Path(args.folder)
    setup_distributed()
    seed_everything(0 if not args.resume else 12345)  # a resumed run must get everything from the checkpoint
    dls = get_dls('fashion_mnist_sample', batch_size=args.batch_size, device='cpu', seed=0)
    model = create_model('mlp', in_channels=1, num_classes=10, hidden=(64,), dropout=args.dropout)
    trainer = Trainer(model, dls, lr=3e-3, device='cpu', precision='fp32', progress=False,
                      callbacks=[Steps(args.die_at, args.hang_at), Checkpoint(folder, every_n_steps=args.every),
                                 *([PruneEasy(args.prune)] if args.prune else [])])
    trainer.fit(args.epochs, resume=folder/'last.pt' if args.resume else None)
    state = trainer.state_dict()  # an exchange under torchrun: every process calls it
    result = evaluate(trainer.model, dls.test, classes=dls.classes)
    try: refused = Trainer(model, dls, device='cpu', sync_batchnorm=True) and None  # on CPUs, with 2 processes
    except ValueError as e: refused = str(e)
    if is_main_process():
        save_checkpoint(state, folder/'final.pt')
        pruned = next((cb for cb in trainer.callbacks if isinstance(cb, PruneEasy)), None)
        (folder/'result.json').write_text(json.dumps({'history': trainer.history.records, 'test': result.metrics,
                                                      'n_predictions': len(result), 'sync_batchnorm_refused': refused,
                                                      'skipped': pruned and pruned.skipped}))
    teardown_distributed()


if __name__ == '__main__': main()

"""A small training run for test_train_resume.py: `full` trains from scratch, `resume` continues from last.pt.

Usage: python train_resume_worker.py FOLDER full|resume
Prints each optimizer step as it ends, so the test knows where the run is; writes FOLDER/final.pt at the end.
"""
import sys
from pathlib import Path

import torch
from torch import nn

torch.set_num_threads(1)  # the same arithmetic in every process, and no contention on shared cores

from mlpipe.callbacks import Checkpoint
from mlpipe.checkpoint import save_checkpoint
from mlpipe.loaders import get_dls
from mlpipe.events import Callback
from mlpipe.numerics import seed_everything
from mlpipe.train import Trainer

EPOCHS, EVERY_N_STEPS = 2, 3

def small_convnet() -> nn.Module:
    "A conv net with what makes resuming hard: BatchNorm's buffers, channels_last, and dropout's random masks."
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(8 * 7 * 7, 10))

class PrintStep(Callback):
    "Print each optimizer step; it runs before Checkpoint, so a kill sent on reading it may land while one is written."
    def after_step(self, trainer): print(trainer.step, flush=True)

def main(folder: str, mode: str):
    folder = Path(folder)
    # a resumed run is seeded differently: everything it needs must come from the checkpoint
    seed_everything(0 if mode == 'full' else 12345)
    dls = get_dls('fashion_mnist_sample', batch_size=256, device='cpu', seed=0)
    trainer = Trainer(small_convnet(), dls, lr=3e-3, device='cpu', precision='fp32', progress=False,
                      callbacks=[PrintStep(), Checkpoint(folder, every_n_steps=EVERY_N_STEPS)],
                      config={'test': 'resume'})
    trainer.fit(EPOCHS, resume=folder/'last.pt' if mode == 'resume' else None)
    save_checkpoint(trainer.state_dict(), folder/'final.pt')

if __name__ == '__main__': main(*sys.argv[1:])

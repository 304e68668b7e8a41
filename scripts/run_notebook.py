#!/usr/bin/env python
"""Run notebooks in place through a Jupyter kernel, as JupyterLab's "Run All" does, and save what a reader sees.

The kernel starts in the notebook's folder with matplotlib's inline backend (MPLBACKEND is dropped from its
environment: with MPLBACKEND=Agg, a kernel shows no figures). Progress-bar widgets are gone once a run ends (mlpipe's
bars close and leave a line per epoch), so their stale views and widget state are not saved. Cells flagged `#| slow`
keep the outputs recorded when they last ran (a figure measured on a named machine) unless --slow is given.
Then run nbdev_clean. Usage: python scripts/run_notebook.py [--slow] nbs/X.ipynb [...]
"""
import os, re, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
SLOW = re.compile(r'^#\|\s*slow\s*$', re.M)
SKIP = 'skip-execution'  # nbclient leaves a cell with this tag, and its outputs, as they are


def drop_widgets(nb):
    "Remove widget views from the outputs and the widget state from the metadata."
    for cell in nb.cells:
        if cell.cell_type == 'code': cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get('data', {})]
    nb.metadata.pop('widgets', None)


def run(path: Path, slow: bool = False) -> bool:
    "Execute the notebook at `path` and save it; False if a cell failed (the notebook is saved up to it)."
    nb, start = nbformat.read(path, as_version=4), time.monotonic()
    skipped = [] if slow else [c for c in nb.cells if c.cell_type == 'code' and SLOW.search(c.source)]
    for cell in skipped: cell.metadata.setdefault('tags', []).append(SKIP)
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}
    client = NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    try: client.execute(env=env)
    except Exception as e: print(f'{path}: FAILED after {time.monotonic() - start:.0f} s\n{str(e)[-3000:]}')
    else: print(f'{path}: ran in {time.monotonic() - start:.0f} s')
    for cell in skipped:
        cell.metadata['tags'].remove(SKIP)
        if not cell.metadata['tags']: del cell.metadata['tags']
    drop_widgets(nb)
    nbformat.write(nb, path)
    return not any(o.output_type == 'error' for c in nb.cells if c.cell_type == 'code' for o in c.outputs)


if __name__ == '__main__':
    slow = '--slow' in sys.argv
    paths = [Path(p).resolve() for p in sys.argv[1:] if p != '--slow']
    sys.exit(0 if all([run(p, slow) for p in paths]) else 1)

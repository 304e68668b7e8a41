"""The tutorials run top to bottom in a real Jupyter kernel, as a reader in JupyterLab runs them.

nbdev_test skips them (their front matter says skip_exec), since this runs them anyway: each one executes
through nbclient in a scratch folder, so nothing it writes lands in the repository."""
import json, shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = sorted((Path(__file__).resolve().parents[1]/'nbs'/'tutorials').glob('*.ipynb'))


@pytest.mark.parametrize('path', TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_a_kernel(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert not errors, errors


def test_tutorials_are_there_and_keep_their_outputs():
    assert {p.stem for p in TUTORIALS} >= {'blog_pipeline', 'fashion_mnist'}
    # the docs show what a reader will see: the end-to-end tutorial is saved with its outputs (pictures included)
    nb = json.loads((TUTORIALS[0].parent/'fashion_mnist.ipynb').read_text())
    images = [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert len(images) >= 5

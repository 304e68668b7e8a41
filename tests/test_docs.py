"""The docs site: nbdev_proc_nbs (the part of nbdev_docs that needs no Quarto) runs clean, every page is there,
and every exported public name is documented on the page of the notebook it comes from."""
import importlib, json, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'


def _modules():
    "(module name, source notebook) for every exported module, read from nbdev's header line."
    for py in sorted((ROOT/'mlpipe').glob('*.py')):
        if py.name.startswith('_'): continue
        m = re.search(r'File to edit: \.\./nbs/(\S+\.ipynb)', py.read_text())
        if m: yield py.stem, m.group(1)


def _text(nb: dict) -> tuple[str, str]:
    "A processed notebook's rendered show_doc output, and all of its text."
    docs, everything = [], []
    for cell in nb['cells']:
        everything.append(''.join(cell['source']))
        for out in cell.get('outputs', []):
            md = ''.join(out.get('data', {}).get('text/markdown', ''))
            docs.append(md); everything.append(md)
    return '\n'.join(docs), '\n'.join(everything)


@pytest.fixture(scope='module')
def processed(tmp_path_factory):
    "Run nbdev_proc_nbs on a copy of the project; Quarto is not needed for this step (a stub stands in for it)."
    work = tmp_path_factory.mktemp('docs')
    for name in ('settings.ini', '_quarto.yml', 'README.md'): shutil.copy(ROOT/name, work/name)
    shutil.copytree(NBS, work/'nbs', symlinks=True, ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    stub = work/'bin'; stub.mkdir()
    (stub/'quarto').write_text('#!/bin/sh\nexit 0\n'); (stub/'quarto').chmod(0o755)  # so nbdev does not try to install it
    env = {**os.environ, 'PATH': f"{stub}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([shutil.which('nbdev_proc_nbs', path=env['PATH']), '--n_workers', '1'], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'Traceback' not in run.stdout + run.stderr, run.stdout + run.stderr
    return work/'_proc'


def test_quarto_config_has_one_source():
    link = NBS/'_quarto.yml'
    assert link.is_symlink() and os.readlink(link) == '../_quarto.yml'


def test_every_page_is_processed(processed):
    pages = [p.relative_to(NBS) for p in NBS.rglob('*.ipynb') if not any(part.startswith(('.', '_')) for part in p.parts)]
    assert pages
    for page in pages: assert (processed/page).exists(), f'{page} missing from the processed docs'
    assert (processed/'_quarto.yml').exists() and (processed/'sidebar.yml').exists()


def test_every_public_name_is_documented_on_its_page(processed):
    for module, notebook in _modules():
        mod = importlib.import_module(f'mlpipe.{module}')
        docs, everything = _text(json.loads((processed/notebook).read_text()))
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and getattr(obj, '__module__', None) == mod.__name__:
                assert re.search(rf'^#+ {re.escape(name)}\b', docs, re.M), f'{name} has no rendered show_doc in {notebook}'
            else: assert name in everything, f'{name} does not appear in {notebook}'


def test_sidebar_lists_every_page():
    sidebar = (NBS/'sidebar.yml').read_text()
    for page in NBS.rglob('*.ipynb'):
        rel = page.relative_to(NBS)
        if any(part.startswith(('.', '_')) for part in rel.parts): continue
        assert str(rel) in sidebar, f'{rel} is not in nbs/sidebar.yml'

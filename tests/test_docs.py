"""The docs site: nbdev_proc_nbs (the part of nbdev_docs that needs no Quarto) runs clean, every page is there,
and every exported public name is documented on the page of the notebook it comes from."""
import ast, importlib, json, os, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'


def _notebooks() -> list[Path]:
    "Every page's notebook (folders and files starting with `.` or `_` are not pages)."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('.', '_')) for part in p.relative_to(NBS).parts))


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
            docs.append(md)
            everything.append(md)
    return '\n'.join(docs), '\n'.join(everything)


@pytest.fixture(scope='module')
def processed(site):
    "nbdev_proc_nbs's output on a copy of the project (the `site` fixture of conftest.py); Quarto is not needed."
    return site.proc


def test_proc_nbs_runs_clean(site):
    "Building the docs executes nothing beyond what nbdev must: no warning, no traceback."
    assert 'Traceback' not in site.log, site.log
    assert 'Found cells containing imports and other code' not in site.log, site.log
    assert 'warn' not in site.log.lower(), site.log


def test_quarto_config_has_one_source():
    link = NBS/'_quarto.yml'
    assert link.is_symlink() and os.readlink(link) == '../_quarto.yml'


def test_every_page_is_processed(processed):
    pages = [p.relative_to(NBS) for p in _notebooks()]
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
                heading = re.search(rf'^#+ {re.escape(name)}\b', docs, re.M)
                assert heading, f'{name} has no rendered show_doc in {notebook}'
            else: assert name in everything, f'{name} does not appear in {notebook}'


def test_sidebar_lists_every_page():
    sidebar = (NBS/'sidebar.yml').read_text()
    for page in NBS.rglob('*.ipynb'):
        rel = page.relative_to(NBS)
        if any(part.startswith(('.', '_')) for part in rel.parts): continue
        assert str(rel) in sidebar, f'{rel} is not in nbs/sidebar.yml'


def _code_cells(path: Path):
    for i, cell in enumerate(json.loads(path.read_text())['cells']):
        if cell['cell_type'] == 'code': yield i, ''.join(cell['source']), cell


def _mixes_imports(source: str) -> bool:
    "nbdev_proc_nbs's rule: a cell with an import and an expression or assignment is run at docs time, with a warning."
    if 'nbdev_export()' in source: return False
    if re.search(r'^#\|\s*(export|exports|exporti|exec_doc)\b', source, re.M): return False
    if re.search(r'^#\|\s*eval:\s*false', source, re.M | re.I): return False
    lines = [line for line in source.splitlines() if not line.startswith(('%', '!'))]
    try: tree = ast.parse('\n'.join(lines))
    except SyntaxError: return False
    nodes = list(ast.walk(tree))
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and \
        any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes)


def test_the_import_rule_is_nbdevs():
    assert _mixes_imports('import torch\nx = 1') and _mixes_imports('try: import yaml\nexcept ImportError: print(1)')
    assert not _mixes_imports('import torch\nfrom pathlib import Path')
    assert not _mixes_imports('#| export\nimport os\nx = 1')
    assert not _mixes_imports('#| hide\nimport nbdev\nnbdev.nbdev_export()') and not _mixes_imports('x = 1')


@pytest.mark.parametrize('path', _notebooks(), ids=lambda p: str(p.relative_to(NBS).with_suffix('')))
def test_no_cell_mixes_imports_with_other_code(path):
    "Such a cell is run again when the docs are built, so the page shows the builder's results (issue 11)."
    mixed = [f'cell {i}: {src[:80]!r}' for i, src, _ in _code_cells(path) if _mixes_imports(src)]
    assert not mixed, f'{path.name}: put the imports in a cell of their own:\n' + '\n'.join(mixed)


LOCAL_PATH = re.compile(r'(/work/|/tmp/|/home/|/Users/|site-packages|C:\\Users)')


@pytest.mark.parametrize('path', _notebooks(), ids=lambda p: str(p.relative_to(NBS).with_suffix('')))
def test_saved_outputs_are_clean(path):
    "What a page shows: no error output, no local path, no warning, no frozen progress bar."
    problems = []
    for i, _, cell in _code_cells(path):
        for out in cell.get('outputs', []):
            text = ''.join(out.get('text', '')) + ''.join(''.join(v) for k, v in out.get('data', {}).items()
                                                         if k.startswith('text/'))
            if out['output_type'] == 'error': problems.append(f"cell {i}: error output {out.get('ename')}")
            if LOCAL_PATH.search(text): problems.append(f'cell {i}: a local path: {LOCAL_PATH.search(text).group(0)}')
            if re.search(r'\w+Warning\b', text) and out.get('name') == 'stderr': problems.append(f'cell {i}: a warning')
            if re.search(r'\b0%\|', text) or 'application/vnd.jupyter.widget-view+json' in out.get('data', {}):
                problems.append(f'cell {i}: a progress bar (its final state is a per-epoch line)')
    assert not problems, f'{path.name}:\n' + '\n'.join(problems)


def test_processed_pages_keep_the_saved_outputs(processed):
    "nbdev_proc_nbs reruns only show_doc cells (and the exports and imports they need): other outputs are as saved."
    strip = lambda s: '\n'.join(line for line in s.splitlines() if not line.startswith('#|')).strip()  # noqa: E731
    recomputed = []
    for path in _notebooks():
        saved = {strip(src): cell.get('outputs', []) for _, src, cell in _code_cells(path)}
        for cell in json.loads((processed/path.relative_to(NBS)).read_text())['cells']:
            src = strip(''.join(cell['source']))
            if cell['cell_type'] != 'code' or src.startswith('show_doc(') or src not in saved: continue
            if cell.get('outputs', []) != saved[src]: recomputed.append(f'{path.name}: {src[:70]!r}')
    assert not recomputed, 'the docs build recomputed these outputs:\n' + '\n'.join(recomputed)

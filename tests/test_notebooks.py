"""Every notebook runs top to bottom in a real Jupyter kernel, as a reader's "Run All" in JupyterLab runs it.

`nbdev_test` runs the cells with execnb, in-process and without a kernel; a kernel differs (tqdm draws widgets,
stdout and stderr are streams, the cwd is the notebook's folder), so this runs each notebook through nbclient on the
`python3` kernel, in a scratch copy of the project (nothing it writes lands in the repository; the last cell's
`nbdev_export()` finds the copy's settings.ini and writes the copy's package). Cells marked `#| slow` are dropped
unless MLPIPE_SLOW=1, in which case they run in the kernel like every other cell.

Each notebook has a kernel of its own, as a fresh "Run All" has; KERNELS of them (default 2, `MLPIPE_KERNELS=1` to time
one notebook alone) run at once on a background thread, each in a project copy of its own (a notebook's last cell
rewrites its copy's package), while the tests wait for their notebook's run in order."""
import os, queue, re, shutil, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SLOW = os.environ.get('MLPIPE_SLOW', '') not in ('', '0')
SKIP_IN_COPY = ('.git', '.venv', '_proc', '_docs', 'runs', 'data', '__pycache__', '.ipynb_checkpoints',
                '*.egg-info', '.pytest_cache', '.ruff_cache')
NOTEBOOKS = sorted(p.relative_to(NBS) for p in NBS.rglob('*.ipynb')
                   if not any(part.startswith(('.', '_')) for part in p.relative_to(NBS).parts))
TIMEOUT_S = 3600  # one cell; the bench's slow cell (the whole bench, about half an hour) is the longest
KERNELS = max(1, int(os.environ.get('MLPIPE_KERNELS', '2')))  # notebooks run at once, each in its own kernel


def is_slow(source: str) -> bool:
    "Is this cell marked `#| slow` (nbdev's tst_flags) in its leading directive comments?"
    return any(re.match(r'#\|\s*slow\b', line) for line in source.splitlines() if line.startswith('#|'))


def copy_project(dest: Path) -> Path:
    "The project without its git history, venv and build outputs, in the scratch folder `dest`."
    copy = dest/ROOT.name
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(*SKIP_IN_COPY))
    return copy


def kernel_env(copy: Path) -> dict:
    "The kernel's environment: the copy's package first on the path, as an editable install of the copy would be."
    path = [str(copy)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])
    # JupyterLab's kernel draws figures with the inline backend: MPLBACKEND=Agg (set for pytest) would hide them
    env = {**{k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}, 'PYTHONPATH': os.pathsep.join(path)}
    env['PATH'] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `mlpipe` and `torchrun` of this venv
    return env


def run_in_kernel(name: Path, copies: queue.Queue) -> float:
    "Run notebook `name` in a kernel of its own, in a project copy taken from `copies`; the seconds it took."
    copy = copies.get()
    try:
        path = copy/'nbs'/name
        nb = nbformat.read(path, as_version=4)
        if not SLOW: nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and is_slow(c.source))]
        client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name='python3',
                                resources={'metadata': {'path': str(path.parent)}})
        start = time.monotonic()
        # the kernel's own stderr (its start-up lines) goes to a log, shown with the error when the run fails: started
        # on the background thread, a kernel would otherwise write between pytest's lines
        with tempfile.TemporaryFile('w+') as log:
            try: client.execute(env=kernel_env(copy), stderr=log)  # raises CellExecutionError with the failing cell
            except Exception as e:
                log.seek(0)
                raise RuntimeError(f"{name}: {e}\nThe kernel's stderr:\n{log.read()[-3000:]}") from e
        seconds = time.monotonic() - start
    finally: copies.put(copy)
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert not errors, f'{name}: error outputs {errors}'
    return seconds


@pytest.fixture(scope='session')
def kernel_runs(request, tmp_path_factory) -> dict:
    "The selected notebooks' runs, started in their order, KERNELS at a time: {notebook: future of its seconds}."
    selected = [item.callspec.params['name'] for item in request.session.items
                if item.originalname == 'test_notebook_runs_in_a_kernel']
    workers = min(KERNELS, len(selected)) or 1
    copies = queue.Queue()
    for _ in range(workers): copies.put(copy_project(tmp_path_factory.mktemp('project')))
    with ThreadPoolExecutor(workers, thread_name_prefix='kernel') as pool:
        yield {name: pool.submit(run_in_kernel, name, copies) for name in selected}
        pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize('name', NOTEBOOKS, ids=[str(p.with_suffix('')) for p in NOTEBOOKS])
def test_notebook_runs_in_a_kernel(name, kernel_runs):
    seconds = kernel_runs[name].result()  # re-raises the run's error: the failing cell and its traceback
    alone = ' alone' if KERNELS == 1 else f', {KERNELS} notebooks at a time'
    print(f'{name}: {seconds:.0f} s in a kernel{alone}{" (slow cells included)" if SLOW else ""}')


def test_every_notebook_is_collected():
    names = {str(p) for p in NOTEBOOKS}
    assert {'index.ipynb', '00_data.ipynb', 'tutorials/fashion_mnist.ipynb', 'tutorials/blog_pipeline.ipynb'} <= names
    assert all(not str(p).startswith('_') for p in NOTEBOOKS)


@pytest.mark.parametrize('name', NOTEBOOKS, ids=[str(p.with_suffix('')) for p in NOTEBOOKS])
def test_notebook_opens_on_the_python3_kernel(name):
    "JupyterLab opens a notebook without a kernelspec on a 'Select Kernel' dialog; nbdev_clean keeps this key."
    spec = nbformat.read(NBS/name, as_version=4).metadata.get('kernelspec', {})
    assert spec.get('name') == 'python3' and spec.get('language') == 'python', \
        f'{name}: kernelspec {spec}; run `python scripts/kernelspec.py && nbdev_clean`'


def test_slow_cells_are_recognised():
    assert is_slow('#| slow\nx = 1') and is_slow('#|slow\n#| hide\nx = 1') and is_slow('#| hide\n#| slow')
    assert not is_slow('x = 1  #| slow') and not is_slow('#| slowly') and not is_slow('# slow')


def _requirements(key: str) -> set[str]:
    "The distribution names in settings.ini's `key` line."
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return {re.split(r'[<>=!~\[;]', r)[0].lower() for r in cfg['DEFAULT'].get(key, '').split()}


DISTRIBUTION = {'PIL': 'pillow', 'yaml': 'pyyaml', 'IPython': 'ipykernel', 'sklearn': 'scikit-learn'}


def _imported(sources, inside_functions: bool | None = None) -> set[str]:
    """The third-party distributions `sources` import (standard library and mlpipe left out): all of them, or only
    those imported when a function runs (True) or when the module loads (False)."""
    import ast
    names = set()
    for source in sources:
        try: tree = ast.parse('\n'.join(line for line in source.splitlines() if not line.startswith(('%', '!'))))
        except SyntaxError: continue
        guarded = [t for t in ast.walk(tree) if isinstance(t, ast.Try)
                   and any('ImportError' in ast.unparse(h.type) for h in t.handlers if h.type)]
        optional = {id(n) for t in guarded for b in t.body for n in ast.walk(b)}
        functions = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        lazy = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if id(node) in optional: continue  # `try: import x / except ImportError`: an optional dependency
            if inside_functions is not None and (id(node) in lazy) != inside_functions: continue
            if isinstance(node, ast.Import): names |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split('.')[0])
    names -= set(sys.stdlib_module_names) | {'mlpipe', '__future__'}
    return {DISTRIBUTION.get(n, n).lower() for n in names}


def test_the_notebook_extra_runs_every_notebook():
    "`pip install \".[notebook]\"` is enough for JupyterLab: what a notebook imports is in requirements or the extra."
    cells = [c.source for p in NOTEBOOKS for c in nbformat.read(NBS/p, as_version=4).cells if c.cell_type == 'code']
    missing = _imported(cells) - _requirements('requirements') - _requirements('notebook_requirements')
    assert not missing, f'notebooks import {sorted(missing)}: add them to notebook_requirements in settings.ini'


def test_the_runtime_requirements_are_what_the_package_imports():
    """What the library imports as it loads is in `requirements`; what a function imports when it is called (the
    export formats, nbdev for show_doc) is in an extra; `requirements` lists nothing the library never imports."""
    from configparser import ConfigParser
    sources = [p.read_text() for p in (ROOT/'mlpipe').glob('*.py')]
    required, eager = _requirements('requirements'), _imported(sources, inside_functions=False)
    assert eager <= required, f'mlpipe imports {sorted(eager - required)} as it loads: add them to requirements'
    cfg = ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    extras = set().union(*(_requirements(k) for k in cfg['DEFAULT'] if k.endswith('_requirements')))
    lazy = _imported(sources, inside_functions=True)
    missing = lazy - required - extras
    assert not missing, f'mlpipe functions import {sorted(missing)}: add them to an extra'
    unused = required - _imported(sources)
    assert not unused, f'requirements lists {sorted(unused)}, which mlpipe never imports: move them to an extra'

"""Every notebook runs top to bottom in a real Jupyter kernel, as a reader's "Run All" in JupyterLab runs it.

`nbdev_test` runs the cells with execnb, in-process and without a kernel; a kernel differs (tqdm draws widgets,
stdout and stderr are streams, the cwd is the notebook's folder), so this runs each notebook through nbclient on the
`python3` kernel, in a scratch copy of the project (nothing it writes lands in the repository; the last cell's
`nbdev_export()` finds the copy's settings.ini and writes the copy's package). Cells marked `#| slow` are dropped
unless MLPIPE_SLOW=1, in which case they run in the kernel like every other cell.

Each notebook has a kernel of its own, as a fresh "Run All" has. The runs are tests/background.py's: started when the
session starts, KERNELS of them at a time (default 2, `MLPIPE_KERNELS=1` to time one notebook alone), the tutorials
first (they train end to end and take longest), beside the other tests; each test here waits for its notebook's run.
The kernels are forked from a process that imported torch already (tests/kernel_zygote.py; MLPIPE_FORK_KERNELS=0 for
plain ones): the last test checks that such a kernel sees what a plain one sees."""
import re, sys
from pathlib import Path

import nbformat
import pytest

from background import KERNELS, SLOW, is_slow

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p.relative_to(NBS) for p in NBS.rglob('*.ipynb')
                   if not any(part.startswith(('.', '_')) for part in p.relative_to(NBS).parts))


LONGEST = ('07_bench', '07b_bench_run')  # the chapters that take longest in a kernel (about 40 and 30 s idle)


def in_a_kernel(name: Path):
    "The test's parameter `name`, marked to run in the background; the tutorials and the longest chapters first."
    first = name.parts[0] == 'tutorials' or name.stem in LONGEST  # started early, no long run is left alone at the end
    return pytest.param(name, marks=pytest.mark.background('notebook', str(name), first=first),
                        id=str(name.with_suffix('')))


@pytest.mark.parametrize('name', [in_a_kernel(name) for name in NOTEBOOKS])
def test_notebook_runs_in_a_kernel(name, background):
    run = background.result('notebook', str(name))
    assert not run['error'], run['error']  # the failing cell and its traceback, or the error outputs
    alone = ' alone' if KERNELS == 1 else f', {KERNELS} runs at a time'
    print(f"{name}: {run['seconds']:.0f} s in a kernel{alone}{' (slow cells included)' if SLOW else ''}")


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


@pytest.mark.background('probe')
def test_a_forked_kernel_is_a_fresh_kernel_of_the_project_copy(background):
    "The kernels tests/kernel_zygote.py forks see what a plain 'python3' kernel started in the same folder sees."
    import kernel_zygote
    from background import FORK_KERNELS
    probe = background.result('probe')
    assert probe['kernel'] == (kernel_zygote.NAME if FORK_KERNELS else 'python3'), 'the zygote did not start'
    seen = f"the copy {probe['folder']} {probe['copy']} module://matplotlib_inline.backend_inline set by the probe\n"
    assert probe['this session'] == seen and probe['plain'] == seen
    # a fresh namespace: nothing the zygote imported is a name in the notebook
    assert probe['a name the zygote imported'] == "NameError: name 'torch' is not defined"

"""README.md is made from nbs/index.ipynb (the docs' home page); this fails when the two drift apart."""
import importlib.util, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_module():
    spec = importlib.util.spec_from_file_location('readme', ROOT/'scripts'/'readme.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_is_rendered_from_index():
    assert (ROOT/'README.md').read_text(encoding='utf-8') == _readme_module().render(), \
        'README.md differs from nbs/index.ipynb: edit the notebook, then run python scripts/readme.py'


def test_readme_test_command_is_what_ci_runs():
    readme, ci = (ROOT/'README.md').read_text(), (ROOT/'.ci'/'run').read_text()
    command = re.search(r'pip install -e "\.\[dev\]" && (.+)', readme).group(1).strip()
    assert command in ci, f'.ci/run does not run the README test command: {command}'

#!/usr/bin/env python
"""Give every notebook the Python 3 kernelspec, so JupyterLab opens it on that kernel without asking.

nbdev_clean keeps `kernelspec` in a notebook's metadata (it is one of the keys it always allows); a notebook that was
written without one (by jupytext or a script) opens on a "Select Kernel" dialog. This adds it where it is missing and
drops jupytext's leftover filter settings. Usage: python scripts/kernelspec.py && nbdev_clean
"""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}  # nbdev_clean's display_name


def fix(path: Path) -> bool:
    "Set the kernelspec of the notebook at `path`; True if the file changed."
    text = path.read_text(encoding='utf-8')
    nb = json.loads(text)
    nb['metadata'].pop('jupytext', None)
    nb['metadata']['kernelspec'] = KERNELSPEC
    new = json.dumps(nb, indent=1, ensure_ascii=False) + '\n'
    if new != text: path.write_text(new, encoding='utf-8')
    return new != text


def main():
    notebooks = [p for p in sorted((ROOT/'nbs').rglob('*.ipynb')) if '.ipynb_checkpoints' not in p.parts]
    changed = [p.relative_to(ROOT) for p in notebooks if fix(p)]
    print(f'kernelspec set in {len(changed)} of {len(notebooks)} notebooks', *changed, sep='\n  ')


if __name__ == '__main__': main()

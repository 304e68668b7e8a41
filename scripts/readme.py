#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb, as `nbdev_readme` does where Quarto is installed.

Quarto cannot be installed everywhere, and nbdev_readme needs it; this script renders the same notebook to
GitHub-flavoured markdown with nothing but the standard library, so README.md and the docs' home page never
drift apart. tests/test_readme.py fails when they do. Usage: python scripts/readme.py [--check]
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _text(x): return ''.join(x) if isinstance(x, list) else x

def render(nb_path: Path = ROOT/'nbs'/'index.ipynb') -> str:
    "The notebook as markdown: its markdown cells, its code cells as python blocks, their text outputs below them."
    cells = json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']
    parts = []
    for cell in cells:
        src = _text(cell['source']).strip()
        if not src or re.match(r'#\|\s*hide', src): continue
        if cell['cell_type'] == 'markdown': parts.append(src)
        elif cell['cell_type'] == 'code':
            code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            if code: parts.append(f'```python\n{code}\n```')
            for out in cell.get('outputs', []):
                text = _text(out.get('text') or out.get('data', {}).get('text/plain', '')).rstrip()
                if text: parts.append('    ' + text.replace('\n', '\n    '))
    return '\n\n'.join(parts) + '\n'

def main():
    readme, text = ROOT/'README.md', render()
    if '--check' in sys.argv[1:]:
        if readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md differs from nbs/index.ipynb: run python scripts/readme.py')
        return print('README.md is in sync with nbs/index.ipynb')
    readme.write_text(text, encoding='utf-8')
    print(f'wrote {readme}')

if __name__ == '__main__': main()

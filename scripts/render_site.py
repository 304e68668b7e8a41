#!/usr/bin/env python
"""A stand-in for the docs site where Quarto cannot be installed: nbdev's processed notebooks rendered to HTML.

`nbdev_docs` is `nbdev_proc_nbs` (nbdev's processing: front matter, show_doc output, hidden cells removed) followed by
Quarto. This runs the first step in a copy of the project, with a stub `quarto` first on PATH (without one, nbdev
tries to install Quarto and then `pip install -e` the folder), and renders each processed page with nbconvert, the
saved outputs as they are, with the sidebar's pages as links. tests/test_site.py opens every page in a browser.
Usage: python scripts/render_site.py [OUT]   (default: _site; nothing else is written in the repository)
"""
import json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_IN_COPY = ('.git', '.venv', '_proc', '_docs', '_site', 'runs', 'data', '__pycache__', '.ipynb_checkpoints',
                '*.egg-info', '.pytest_cache', '.ruff_cache')
IMAGE_TYPES = ('image/png', 'image/jpeg', 'image/svg+xml')
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
LAYOUT_CSS = """body { display: flex; margin: 0; font-family: system-ui, sans-serif; }
nav.site { flex: 0 0 15rem; padding: 1rem; border-right: 1px solid #ddd; font-size: 0.9rem; }
nav.site li.current a { font-weight: bold; }
main.page { flex: 1; min-width: 0; padding: 1rem 2rem; max-width: 60rem; }
p.description { font-size: 120%; opacity: 70%; font-style: italic; }"""


def copy_project(dest: Path) -> Path:
    "The project without its git history, venv and build outputs, under `dest`."
    project = Path(dest)/ROOT.name
    shutil.copytree(ROOT, project, symlinks=True, ignore=shutil.ignore_patterns(*SKIP_IN_COPY))
    return project


def process(project: Path) -> str:
    "Run `nbdev_proc_nbs` in `project` (writing `project/_proc`); its stdout and stderr, or an error with them."
    stub = project/'.stub-bin'
    stub.mkdir(exist_ok=True)
    (stub/'quarto').write_text('#!/bin/sh\nexit 0\n')
    (stub/'quarto').chmod(0o755)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, 'PATH': os.pathsep.join([str(stub), str(bin_dir), os.environ['PATH']])}
    run = subprocess.run([str(bin_dir/'nbdev_proc_nbs')], cwd=project, env=env, capture_output=True, text=True,
                         timeout=900)
    log = run.stdout + run.stderr
    if run.returncode: raise RuntimeError(f'nbdev_proc_nbs failed (exit {run.returncode}):\n{log}')
    return log


def sidebar_pages(nbs: Path) -> list[str]:
    "The pages in the sidebar's order (nbs/sidebar.yml), then any other notebook."
    import yaml
    def walk(items):
        for item in items:
            if isinstance(item, str): yield item
            elif isinstance(item, dict): yield from walk(item.get('contents', []))
    listed = [p for p in walk(yaml.safe_load((nbs/'sidebar.yml').read_text())['website']['sidebar']['contents'])
              if p.endswith('.ipynb')]
    others = sorted(str(p.relative_to(nbs)) for p in nbs.rglob('*.ipynb')
                    if not any(part.startswith(('.', '_')) for part in p.relative_to(nbs).parts))
    return listed + [p for p in others if p not in listed]


def _html_links(text: str) -> str:
    "Quarto's `[text](url){attributes}` as an HTML link, and links to notebooks as links to their pages."
    text = re.sub(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}', r'<a href="\2" \3>\1</a>', text)
    return re.sub(r'(\]\(|href=")((?!https?:)[^)"\s]+)\.ipynb', r'\1\2.html', text)


def _front_matter(nb) -> dict:
    "Remove nbdev's front-matter cell from `nb`; its title and description."
    import yaml
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == 'raw' and cell.source.lstrip().startswith('---'):
            del nb.cells[i]
            return yaml.safe_load(cell.source.strip().strip('-')) or {}
    return {}


def _prepare(nb) -> dict:
    "Make a processed notebook ready for nbconvert, as Quarto reads it; what it shows: outputs, images, errors."
    counts = dict(outputs=0, images=0, errors=0, show_docs=0)
    nb.metadata.pop('widgets', None)
    for cell in nb.cells:
        cell.pop('has_sd', None)  # nbdev's mark of a show_doc cell, not in the notebook format
        if cell.cell_type == 'markdown': cell.source = _html_links(cell.source)
        if cell.cell_type != 'code': continue
        directives = re.findall(r'^#\|\s*(.*)$', cell.source, re.M)
        cell.source = '\n'.join(line for line in cell.source.splitlines() if not line.startswith('#|')).strip()
        if 'echo: false' in directives or not cell.source: cell.metadata['transient'] = {'remove_source': True}
        cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get('data', {})]
        for data in (o['data'] for o in cell.outputs if 'text/markdown' in o.get('data', {})):
            data['text/markdown'] = _html_links(data['text/markdown'])
        if re.match(r'show_doc\(', cell.source):
            cell.metadata.setdefault('tags', []).append('showdoc')
            counts['show_docs'] += 1
            continue
        counts['outputs'] += bool(cell.outputs)
        counts['images'] += sum(any(t in o.get('data', {}) for t in IMAGE_TYPES) for o in cell.outputs)
        counts['errors'] += sum(o.output_type == 'error' for o in cell.outputs)
    return counts


def _page(body: str, title: str, description: str, nav: str, css: str) -> str:
    "One page: the sidebar, the title, and nbconvert's body, with no script or style from the network."
    body = re.sub(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>', '', body)
    body = re.sub(r'<script type="text/x-mathjax-config">.*?</script>', '', body, flags=re.S)
    head = f'<h1>{title}</h1>' + (f'<p class="description">{description}</p>' if description else '')
    body = re.sub(r'<body([^>]*)>', lambda m: f'<body{m.group(1)}>{nav}<main class="page">{head}', body, count=1)
    body = body.replace('</body>', '</main></body>')
    return body.replace('</head>', f'<style>{css}</style></head>')


def render(proc: Path, out: Path, pages: list[str]) -> list[dict]:
    "Render each processed page under `out` as HTML; what each page shows (written to out/manifest.json too)."
    import nbformat
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    css = LAYOUT_CSS + (proc/'styles.css').read_text() if (proc/'styles.css').exists() else LAYOUT_CSS
    manifest = []
    for page in pages:
        nb = nbformat.read(proc/page, as_version=4)
        fm = _front_matter(nb)
        counts = _prepare(nb)
        depth = '../'*page.count('/')
        links = ''.join(f'<li{" class=current" if p == page else ""}><a href="{depth}{Path(p).with_suffix(".html")}">'
                        f'{Path(p).stem}</a></li>' for p in pages)
        body, _ = exporter.from_notebook_node(nb)
        html = out/Path(page).with_suffix('.html')
        html.parent.mkdir(parents=True, exist_ok=True)
        title = fm.get('title', Path(page).stem)
        html.write_text(_page(body, title, fm.get('description', ''), f'<nav class="site"><ul>{links}</ul></nav>', css),
                        encoding='utf-8')
        manifest.append({'page': page, 'html': str(html.relative_to(out)), 'title': title, **counts})
    (out/'manifest.json').write_text(json.dumps(manifest, indent=1))
    return manifest


def build(out: Path, work: Path) -> tuple[Path, list[dict], str]:
    "Process a copy of the project made in `work` and render it under `out`; the copy, the manifest, nbdev's log."
    project = copy_project(work)
    log = process(project)
    out.mkdir(parents=True, exist_ok=True)
    return project, render(project/'_proc', out, sidebar_pages(project/'nbs')), log


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT/'_site').resolve()
    with tempfile.TemporaryDirectory() as work: _, manifest, log = build(out, Path(work))
    print(log.strip())
    for p in manifest: print(f"{p['html']}: {p['outputs']} outputs, {p['images']} images, {p['errors']} errors")
    print(f'open {out/"index.html"}')


if __name__ == '__main__': main()

"""Packaging for mlpipe. All metadata lives in settings.ini (nbdev's single source); this file only reads it."""
from configparser import ConfigParser
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = ('version description keywords author author_email license status min_python '
            'repo user branch lib_name'.split())
missing = [k for k in expected if k not in cfg]
if missing: raise SystemExit(f"settings.ini lacks {missing}")

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License'),
            'mit': ('MIT License', 'OSI Approved :: MIT License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable',
            '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
min_python = cfg['min_python']
requirements = cfg.get('requirements', '').split()
# every `NAME_requirements` line is an extra, `pip install ".[NAME]"`; dev holds all of them plus its own test tools,
# so the notebook extra's pins (nbdev, execnb, fastcore) are the very pins the tests use
extras = {k.removesuffix('_requirements'): cfg[k].split() for k in cfg
          if k.endswith('_requirements') and k not in ('requirements', 'dev_requirements')}
extras['dev'] = list(dict.fromkeys(sum(extras.values(), []) + cfg.get('dev_requirements', '').split()))
console_scripts = cfg.get('console_scripts', '').split()

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    license=lic[0],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    url=cfg['git_url'],
    keywords=cfg['keywords'],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + [f'Programming Language :: Python :: {v}' for v in py_versions[py_versions.index(min_python):]]
                + ([f'License :: {lic[1]}'] if lic[1] else []),
    packages=setuptools.find_packages(include=['mlpipe', 'mlpipe.*']),
    # The bundled Fashion-MNIST sample ships inside the package so `mlpipe train` works offline.
    package_data={'mlpipe': ['assets/fashion_mnist_sample/*']},
    include_package_data=True,
    install_requires=requirements,
    extras_require=extras,
    python_requires='>=' + min_python,
    zip_safe=False,
    entry_points={'console_scripts': console_scripts, 'nbdev': [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"]},
)

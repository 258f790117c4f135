"""recipebench: a benchmark harness for silent neural-network training bugs.

The repository keeps three top-level folders, installed as subpackages of this one
(``pyproject.toml``: ``package_dir``), so that nothing claims the generic top-level
names ``bugs``, ``detectors`` or ``harness`` that other distributions use:

- :mod:`recipebench.bugs` (folder ``bugs/``): the catalog of silent mistakes;
- :mod:`recipebench.detectors` (folder ``detectors/``): the recipe's checks and peer tools;
- :mod:`recipebench.harness` (folder ``harness/``): pipelines, tracing, runner, reports.
"""
__version__ = "0.2.0"

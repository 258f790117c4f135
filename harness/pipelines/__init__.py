"""Reference pipelines on real data bundled with installed packages.

Each module registers one or more factories with ``@register_pipeline``; they are
discovered with pkgutil, so a new pipeline is one new file here.
"""

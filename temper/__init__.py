"""Temper shared core: tier model, annotation contract, settings, logging, Kubernetes and TLS.

The components (``agent``, ``extender``, ``webhook``, ``rightsizer``) import this package and
never each other. Only :mod:`temper.cli` sits above the components.
"""

__version__ = "0.1.0"

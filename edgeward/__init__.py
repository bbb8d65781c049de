"""Edgeward: what the cloud hub and the edge daemon share.

The wire protocol (:mod:`edgeward.protocol`), the resource kinds
(:mod:`edgeward.kinds`), configuration loading (:mod:`edgeward.configfile`)
and the operator CLI (:mod:`edgeward.cli`). Nothing here imports
:mod:`cloudhub` or :mod:`edgecore`.
"""

__version__ = "0.1.0"

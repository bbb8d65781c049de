"""The ``edgeward`` operator CLI: kubectl-like commands against a cloudhub's REST API.

:mod:`.main` builds the parser from :data:`edgeward.cli.main.SUBCOMMANDS`;
each command lives in its own module with a ``register(subparsers)`` function.
:mod:`.client` is the HTTP client (stdlib only), :mod:`.manifests` reads
YAML/JSON manifests, :mod:`.output` and :mod:`.columns` format what is printed.
"""

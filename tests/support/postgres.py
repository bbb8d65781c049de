"""A throwaway PostgreSQL cluster for the tests; it lives in :mod:`edgeward.pgcluster`,
where ``edgeward demo-ha`` finds it too."""

from edgeward.pgcluster import PostgresCluster, free_port

__all__ = ["PostgresCluster", "free_port"]

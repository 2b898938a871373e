"""Work and pools: local work, pool failover, Stratum V1 and V2 sessions."""

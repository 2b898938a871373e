"""Power: the governor, its service, operating points, operator controls."""

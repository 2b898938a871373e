"""Tools around the agent: technician CLI, simulated rig, benchmarks."""

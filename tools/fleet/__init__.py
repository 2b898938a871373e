"""Fleet tools: what a farm runs on its own machines to watch and steer many miners."""

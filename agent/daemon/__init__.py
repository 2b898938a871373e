"""The daemon: command line, config assembly, wiring, supervisor, liveness, logging."""

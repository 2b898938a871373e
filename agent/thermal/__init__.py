"""Fans and heat: the thermal service, the fan loop, the noise model, quiet mode."""

"""The simulated rig: the hardware hashbay drives, modelled closely enough to test against."""

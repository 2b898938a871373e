"""The hardware seam: bus back-ends, the rig of drivers on them, slot hardware, fans."""

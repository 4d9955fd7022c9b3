"""Interactive segmentation: prompts (clicks, box, previous mask) encoded for a network, the
simulated user that places clicks on errors, and the per-object session with undo."""

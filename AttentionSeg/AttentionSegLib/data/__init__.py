"""Dataset definitions (MSD, nnU-Net v2), case reading and preprocessing, corrections that become
training cases, and synthetic phantoms for tests and the demo."""

"""Building blocks shared by the networks: attention modules, convolution helpers, argument checks."""

"""``python -m AttentionSegLib`` runs the ``attentionseg`` command line."""

import sys

from AttentionSegLib.cli import main

sys.exit(main())

"""The web front end: trame-slicer views and panels over the same MRML scene and logic classes
as the Slicer modules (``attentionseg web``)."""

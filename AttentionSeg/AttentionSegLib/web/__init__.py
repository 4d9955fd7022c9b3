"""The web front end: trame-slicer views and panels over the same MRML scene and logic classes
as the Slicer modules (``attentionseg web``)."""

# The largest upload (MB) unless `attentionseg web --max-upload-mb` says otherwise. Here, free of
# slicer and trame, so the command line can show it without loading either.
DEFAULT_MAX_UPLOAD_MB = 1024.0

"""The segmentation server: many readers, one GPU server or a cluster (``attentionseg serve``).

Built on Ray Serve (replicas per GPU, several nodes, a FastAPI ingress, the object store); no
scheduler of our own. :mod:`.app` holds the HTTP endpoints over the same engine as a local run,
:mod:`.image_store` the per-user image cache in the object store, :mod:`.tokens` the bearer tokens,
:mod:`.wire` the message format (JSON header + raw arrays, never pickle), :mod:`.client` what the
CLI, the Slicer Logic and the web page use to run a model at ``http(s)://HOST:PORT/models/NAME``,
and :mod:`.cohort` spreads a dataset's cases over a cluster's workers.

Prompts are stateless: every click request carries the object's prompts and its current mask, and
refers to an image uploaded once by its SHA-256, so any replica answers any click.
"""

"""The promptable generalist: a class-agnostic interactive network trained on a dataset collection
(:mod:`.samples`: objects, scales and contrasts; :mod:`.trainer`: the resumable run)."""

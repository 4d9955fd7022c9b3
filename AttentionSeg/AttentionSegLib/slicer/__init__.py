"""The Slicer glue: the only package of the engine that imports ``slicer``, ``vtk`` or ``qt``.

- MRML conversion: :mod:`.mrml`; segments, volumes and chart nodes: :mod:`.segments`,
  :mod:`.volumes`, :mod:`.charts`, :mod:`.training_curves`.
- The Qt-free logic classes behind the two Slicer modules, one per job: :mod:`.segment_logic`,
  :mod:`.compare_logic`, :mod:`.click_logic`, :mod:`.metrics_logic`, :mod:`.corrections_logic`
  (sharing a :mod:`.predictor_cache`), :mod:`.training_logic` (its form: :mod:`.training_form`).
- Background jobs: the process runner :mod:`.process`, used by :mod:`.background` and training.
- Test fakes for self-tests: :mod:`.testing`.

Tested against real MRML with slicer-core.
"""

"""The page's panels, one module each: :mod:`.case` (volume and reference), :mod:`.segment`
(models and Segment), :mod:`.compare`, :mod:`.clicks`, :mod:`.metrics`, :mod:`.correction`
(Segment Editor, save as training case, export) and :mod:`.training`; :mod:`.panel` holds what
they share (the page they sit on and the guard around their callbacks)."""

"""The Slicer glue: the only package that imports ``slicer``, ``vtk`` or ``qt``. MRML conversion,
the Qt-free logic classes of the two modules (one per job), the process runner and background jobs.
Tested against real MRML with slicer-core."""

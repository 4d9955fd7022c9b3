"""Training, one module per job: the configuration schema (``config``), the experiment planner
(``experiment_planner``, with ``patch_fitting`` and ``device_budget``), a run's settled
configuration (``run_config``), the run folder's paths (``run_folder``), the frozen plan a run
follows (``run_plan``, with ``cases``), augmentation and sampling (``augmentation``), losses,
learning-rate schedules, the time budget, checkpoints and the model file (``checkpoint``),
distributed data parallel (``distributed``), and the trainer that runs them over hooks
(``trainer``: ``train()``). Progress events: :mod:`AttentionSegLib.progress`."""

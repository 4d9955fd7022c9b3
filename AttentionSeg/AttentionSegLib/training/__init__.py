"""Training: the configuration schema, the trainer and its parts (losses, schedules, augmentation,
time budget, checkpoints, run folder, distributed data parallel, progress events)."""

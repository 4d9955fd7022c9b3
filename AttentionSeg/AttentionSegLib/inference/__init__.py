"""Inference: the model file, the sliding-window segmenter shared with training validation, the
predictor (images in, label image on the input grid out) and the folder of registered models."""

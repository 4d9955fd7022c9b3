"""Files: images with their geometry, segmentation files (.seg.nrrd), atomic writes."""

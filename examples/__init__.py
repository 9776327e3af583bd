"""Example training scripts, tracked with assay (also the workloads of the main job)."""

"""Folder of the `evaluate` metric script (``evaluate.load(cacmi_hf.evaluation.metric_path())``)."""

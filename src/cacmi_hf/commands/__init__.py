"""Sub-commands of the `cacmi` console script that are not tied to one data module (see `cacmi_hf.cli`)."""

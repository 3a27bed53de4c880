"""The SB3 side: layer groups and algorithm adapters, run-folder artifacts, policy loading, callbacks,
evaluation and pretraining. Uses ``worlds``; never imports ``transfer`` or the top level."""

"""Calibrating the simulator from recorded target data: ``fit`` (the multiple-shooting problem, solved with
``mujoco.sysid``), ``outputs`` (``calibrated.yaml`` and the report), ``run`` (``sim2real calibrate``)."""

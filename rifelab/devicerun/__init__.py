"""The GPU run on a lent device machine (scripts/device_run.sh): prepared inputs, time-boxed measurement, one archive.

    inputs.py   here, with PyAV: real frame pairs as PNG + the flow weights + the commit, into .device_inputs/
    parts.py    on the device: each measured part (precisions, 4K FP16, batch/streams, compile, profiler)
    runner.py   on the device: one subprocess per part under a global deadline, rows + manifest -> one archive
    archive.py  the archive's layout, written there and checked here
    render.py   here: tables, figures, metrics, notebook and report of the cuda profile from a stored archive

The device side (parts, runner, archive, cli) imports nothing that needs PyAV, OpenVINO, NNCF, ptflops,
torch-pruning, papermill or DVC: the lent machine has none of them.
"""

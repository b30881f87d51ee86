"""Insert frames between every pair of a numbered image folder or a video: `rifelab interpolate`.

    from rifelab.interpolate.run import interpolate_sequence
    from rifelab.interpolate.schedule import InterpolateConfig
    summary = interpolate_sequence("frames/", "out/", load_rife(), InterpolateConfig(multi=4))

Works with any `rifelab.rife.contract.Interpolator`: RIFE, and every backend `rifelab.engines.spec.load_model`
builds (`interpolate` for RGB frames, `interpolate_rgba` for frames with alpha, on the same backend).

Timesteps. `multi` N is the number of frames per input pair including both originals, so N-2
frames are inserted and a sequence of T frames becomes (N-1)(T-1)+1 frames. Output frame
p*(N-1)+i is the frame at time i/(N-1) between input frames p and p+1.

- Direct mode (default): every inserted frame comes straight from the two originals at its own
  timestep i/(N-1), several per model call (per-sample timestep tensors).
- Recursive mode (`recursive=True`, bisection): an interval that spans n output steps is split at
  its middle step m = n // 2; the frame there is made from the interval's two end frames at local
  timestep m/n, then both halves are split the same way, level by level, with already
  interpolated (unrounded) frames as inputs. When N-1 is a power of two every split is at
  t = 0.5: plain bisection, as if the frame rate were doubled repeatedly. When N-1 is not a power
  of two the halves are unequal and some frames are made at a local timestep other than 0.5
  (N=4: the frame at 1/3 from the originals at t=1/3, then the frame at 2/3 from that frame and
  the second original at t=1/2). Either way the output times stay evenly spaced at i/(N-1).

Pair decisions (made in the reader thread, before the model): a pair whose SSIM is at least
`static_ssim` is static, and a pair whose SSIM is below `cut_ssim` or whose colour histograms
differ by more than `cut_hist` (total variation distance) is a scene cut (rifelab.frames.scenes, the one
detector). Neither is sent to the model: each inserted frame repeats the original nearest in time
(t < 0.5: the first, otherwise the second), so a cut stays a cut instead of a morph.

Retiming (`target_fps` or `fps_ratio` R instead of `multi`): output frame k is at input position
k / R, copied when that falls on an input frame and otherwise made directly from the two input
frames around it at its own timestep; floor((T-1) R) + 1 frames. `multi` N is retiming by N-1.

One pipeline for all three: the schedule (schedule.py) gives every input pair its output slots
(index, position, left and right source, timestep, level), and `InterpolationPipeline`
(pipeline.py) fills them for `multi`, recursive mode and retiming alike: a copy, a model frame
(batched level by level over fixed groups of pairs) or a duplicate. `InterpolateConfig.output_count`
is the one output-frame-count formula. A reader thread (decode, pair decisions) -> the model (this
thread) -> a writer thread (uint8 conversion, encode, atomic write), joined by bounded queues
(stages.py), so memory stays bounded on long inputs. Folder outputs are written frame by frame to a temporary name and
renamed, so an interrupted run leaves only complete frames; `resume=True` keeps them and
computes the rest, giving the same files as one uninterrupted run (pairs are batched in fixed
groups, so every model call sees the same batch either way). A non-empty output is refused
unless `resume` or `overwrite` is given. Video outputs (PyAV) are encoded to a temporary file
and renamed when complete; temporaries a killed run left behind are removed by the next run
into the same place (and reported).

The manifest (`.rifelab-interpolate.json` in a folder output) is the one record of what rifelab
wrote there: the settings, and the name and sha256 of every frame, recorded (in its append-only
journal, folded in when the run ends) before the frame is renamed into place. `overwrite` removes
only the files it lists; `resume` keeps a frame only when its checksum still matches and computes
truncated, empty or replaced ones again; a file the manifest does not list is never touched: the
run is refused, naming it. A damaged input video (decode errors, or fewer frames than the
container states) stops the run unless `allow_damaged_input` is set, which reports the lost frames.
"""

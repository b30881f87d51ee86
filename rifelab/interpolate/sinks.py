"""Frame sinks: a folder with its manifest + journal (checksummed, resumable), or a video written atomically."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from rifelab.frames.images import (
    DataError,
    encode_image,
)
from rifelab.interpolate.schedule import (
    FRAME_DIGITS,
    JOURNAL_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    OUTPUT_IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    InterpolateConfig,
    InterpolationSummary,
    is_video_path,
)
from rifelab.publish.results import (
    atomic_path,
    atomic_write_text,
    open_new,
    refuse_link,
    temp_path_beside,
)

log = logging.getLogger(__name__)


def output_frame_name(index: int, ext: str = "png") -> str:
    """File name of output frame `index`: zero-padded to 8 digits, e.g. 00000012.png."""
    return f"{index:0{FRAME_DIGITS}d}.{ext}"


_FRAME_NAME = re.compile(rf"^\d{{{FRAME_DIGITS}}}\.(?:{'|'.join(OUTPUT_IMAGE_EXTENSIONS)})$")


def _temp_pattern(final_names: str) -> re.Pattern:
    """Names `results.temp_path_beside` gives temporaries of files matching the regex `final_names`."""
    return re.compile(rf"^\.(?:{final_names})\.[a-z0-9_]+\.tmp\.\w+$")


def _remove_stale_temps(folder: Path, pattern: re.Pattern) -> list[str]:
    """Remove the temporary files an interrupted run left in `folder` (names matching `pattern`); returns them."""
    removed = []
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if pattern.match(f.name) and f.is_file() and not f.is_symlink():
                f.unlink()
                removed.append(f.name)
    if removed:
        log.warning("removed %d temporary file%s left by an interrupted run in %s: %s", len(removed),
                    "s" if len(removed) > 1 else "", folder, ", ".join(removed[:5]))
    return removed


def _sha256_file(path: Path) -> str | None:
    """sha256 of a file, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


class OutputLock:
    """Advisory lock (flock) of one output, in a file that names the process holding it.

    A second writer is refused with that name instead of mixing its frames with the first one's.
    The file is created without following links and removed when the lock is released.
    """

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what  # "output folder out/", "output video out.mp4"
        self._fd: int | None = None

    def _refuse(self, fd: int) -> DataError:
        try:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        except OSError:
            holder = ""
        holder = holder or "a process that did not say which"
        return DataError(f"{self.what} is being written by another rifelab run ({holder}; lock {self.path}); wait "
                         "for it to finish or stop it, then run again, or choose another output")

    def probe(self) -> None:
        """Raise DataError when another process holds the lock (takes nothing)."""
        if self._fd is not None:
            return
        refuse_link(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refuse(fd) from None
        finally:
            os.close(fd)

    def acquire(self) -> None:
        """Take the lock and write this process's pid and command into it; DataError if another holds it."""
        while self._fd is None:
            refuse_link(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                err = self._refuse(fd)
                os.close(fd)
                raise err from None
            st = os.fstat(fd)
            try:
                cur = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                cur = None
            if cur is None or (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
                os.close(fd)  # released and removed by its holder meanwhile: lock the new file
                continue
            os.ftruncate(fd, 0)
            cmd = shlex.join(["rifelab", *sys.argv[1:]]) if sys.argv else "rifelab"
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {cmd}\n".encode())
            self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a `rifelab interpolate` output folder with every frame it recorded, or None if absent.

    `frames` maps each written file name to its sha256: the manifest's own list plus the lines of its
    append-only journal (a run records each frame there before renaming it into place, and folds the
    journal into the manifest when it ends). Raises DataError for a manifest that cannot be read.
    """
    d = Path(folder)
    path = d / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({exc}); move the folder aside and start again") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is not a rifelab manifest; move the folder aside and start again")
    listed = manifest.get("frames")
    records = list(listed.items()) if isinstance(listed, dict) else []
    journal = d / JOURNAL_NAME
    if journal.exists():
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:  # a kill can cut the last line short; its frame was never renamed into place
                rec = json.loads(line)
                records.append((rec["name"], rec["sha256"]))
            except (ValueError, KeyError, TypeError):
                continue
    # only frame names rifelab gives: a crafted manifest cannot point --overwrite at other files
    manifest["frames"] = {str(n): str(h) for n, h in records if _FRAME_NAME.match(str(n))}
    return manifest


class _FolderSink:
    """Numbered frames in a folder, each written atomically and recorded (name, sha256) in the manifest.

    The manifest is the one record of what rifelab wrote there: --resume keeps a frame only when its
    checksum matches, --overwrite removes only recorded files, and anything else in the folder is refused.
    """

    def __init__(self, folder: Path, config: InterpolateConfig, manifest: dict[str, Any]):
        self.folder = folder
        self.ext = config.ext
        self.config = config
        self.manifest = manifest
        self.existing: set[int] = set()
        self.frames: dict[str, str] = {}  # name -> sha256 of every frame of ours in the folder
        self.recomputed: list[str] = []  # recorded frames whose content no longer matched (resume)
        self.removed_temps: list[str] = []
        self._journal: Any = None
        self._lock = threading.Lock()
        self._pattern = re.compile(rf"^(\d{{{FRAME_DIGITS}}})\.{re.escape(self.ext)}$")
        self._temps = _temp_pattern(rf"\d{{{FRAME_DIGITS}}}\.\w+|{re.escape(MANIFEST_NAME)}")
        self.lock = OutputLock(folder / LOCK_NAME, f"output folder {folder}")

    def check(self) -> None:
        """Every refusal of `prepare`, touching nothing: a run can be refused before its model is loaded."""
        d = self.folder
        if d.exists() and not d.is_dir():
            raise DataError(f"output {d} exists and is not a folder; give a folder (or a video file name ending in "
                            f"{', '.join(VIDEO_EXTENSIONS)})")
        if not d.is_dir():
            return
        for name in (MANIFEST_NAME, JOURNAL_NAME, LOCK_NAME):
            refuse_link(d / name)
        self.lock.probe()
        entries = sorted(f.name for f in d.iterdir() if f.name != LOCK_NAME)
        if not entries:
            return
        if not (self.config.resume or self.config.overwrite):
            raise DataError(
                f"output folder {d} is not empty ({len(entries)} entries); pass --resume to continue an "
                "interrupted run, --overwrite to replace the frames of an earlier run, or choose another folder"
            )
        old = read_manifest(d)
        recorded = old["frames"] if old else {}
        ours = set(recorded) | {MANIFEST_NAME, JOURNAL_NAME}
        foreign = [n for n in entries if n not in ours and not self._temps.match(n)]
        links = [n for n in entries if n in recorded and (d / n).is_symlink()]
        if foreign or links:
            flag = "--resume" if self.config.resume else "--overwrite"
            why = ("it has no rifelab manifest" if old is None else
                   "its manifest does not list them" if foreign else "they are symbolic links now")
            bad = foreign or links
            raise DataError(
                f"output folder {d} holds {len(bad)} file{'s' if len(bad) > 1 else ''} rifelab did not "
                f"write ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}; {why}); {flag} only "
                "touches what an earlier `rifelab interpolate` recorded there. Move those files out or choose "
                "another folder"
            )
        if self.config.resume:
            self._check_manifest(old)

    def prepare(self) -> None:
        d = self.folder
        self.check()
        d.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self._take_over()
        except BaseException:
            self.lock.release()
            raise

    def _take_over(self) -> None:
        """With the lock held: check again, remove stale temporaries and (--overwrite) the recorded frames."""
        d = self.folder
        self.check()
        old = read_manifest(d)
        recorded = old["frames"] if old else {}
        if any(f.name != LOCK_NAME for f in d.iterdir()):
            self.removed_temps = _remove_stale_temps(d, self._temps)
            if self.config.overwrite:
                for name in sorted(recorded):
                    with contextlib.suppress(FileNotFoundError):
                        (d / name).unlink()
                log.info("--overwrite: removed the %d frames of the earlier run in %s", len(recorded), d)
            else:
                self._verify(recorded)
        if self.existing:
            log.info("resume: %d frames already in %s are kept (checksums verified)", len(self.existing), d)
        self._save_manifest(complete=False)
        self._journal = open_new(d / JOURNAL_NAME)  # starts empty (the manifest holds the rest); never via a link

    def _verify(self, recorded: dict[str, str]) -> None:
        """Keep the recorded frames whose sha256 still matches; the others are computed again."""
        for name, digest in sorted(recorded.items()):
            path = self.folder / name
            if not path.exists():
                continue
            if _sha256_file(path) != digest:
                self.recomputed.append(name)
                continue
            self.frames[name] = digest
            m = self._pattern.match(name)
            if m:
                self.existing.add(int(m.group(1)))
        if self.recomputed:
            log.warning(
                "resume: %d frame%s in %s no longer match what rifelab wrote (truncated, damaged or replaced): %s; "
                "computed again", len(self.recomputed), "s" if len(self.recomputed) > 1 else "", self.folder,
                ", ".join(self.recomputed[:5]) + (", ..." if len(self.recomputed) > 5 else ""))

    def _check_manifest(self, old: dict[str, Any] | None) -> None:
        if old is None:
            raise DataError(
                f"--resume: {self.folder} has no {MANIFEST_NAME}, so it was not written by `rifelab interpolate`; "
                "choose an empty folder"
            )
        diffs = [
            f"{k}: {old.get(k)!r} then, {v!r} now"
            for k, v in self.manifest.items()
            if k not in ("complete", "summary", "frames") and old.get(k) != v
        ]
        if diffs:
            raise DataError(
                f"--resume: the run that wrote {self.folder} used other settings ({'; '.join(diffs)}); rerun with "
                "the same input and options, or pass --overwrite to start again"
            )

    def _save_manifest(self, **extra: Any) -> None:
        data = dict(self.manifest, **extra, frames=dict(sorted(self.frames.items())))
        atomic_write_text(self.folder / MANIFEST_NAME, json.dumps(data, indent=2, default=str) + "\n")

    def has(self, index: int) -> bool:
        return index in self.existing

    def write(self, index: int, frame: np.ndarray) -> None:
        name = output_frame_name(index, self.ext)
        data = encode_image(frame, self.ext)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:  # recorded before it is renamed into place: a kill never leaves an unrecorded frame
            self._journal.write(json.dumps({"name": name, "sha256": digest}) + "\n")
            self._journal.flush()
            self.frames[name] = digest
        with atomic_path(self.folder / name) as tmp:
            tmp.write_bytes(data)

    def _close(self, **extra: Any) -> None:
        """Fold the journal into the manifest and remove it."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._save_manifest(**extra)
        (self.folder / JOURNAL_NAME).unlink(missing_ok=True)

    def finish(self, summary: InterpolationSummary) -> None:
        try:
            self._close(complete=True, summary=summary.as_dict())
        finally:
            self.lock.release()

    def abort(self) -> None:
        """Complete frames stay for --resume (recorded in the manifest; the journal keeps them if that fails)."""
        try:
            with contextlib.suppress(OSError):
                self._close(complete=False)
        finally:
            self.lock.release()


def video_record_path(path: Path) -> Path:
    """The record beside a video that `rifelab interpolate` wrote: `.NAME.rifelab.json` (sha256 and size)."""
    return path.parent / f".{path.name}.rifelab.json"


def written_by_rifelab(path: Path) -> bool:
    """Whether the video at `path` is the one rifelab last wrote there (its record's sha256 and size match)."""
    record = video_record_path(path)
    if record.is_symlink() or path.is_symlink():
        return False
    try:
        rec = json.loads(record.read_text(encoding="utf-8"))
        return (isinstance(rec, dict) and rec.get("name") == path.name and rec.get("size") == path.stat().st_size
                and rec.get("sha256") == _sha256_file(path))
    except (OSError, ValueError):
        return False


_VFR_TIME_BASE = Fraction(1, 90000)
# audio codecs each output can hold (others: try); .mkv holds any
_AUDIO_CODECS = {".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}, ".webm": {"opus", "vorbis"}}
_AUDIO_CODECS[".m4v"] = _AUDIO_CODECS[".mov"] = _AUDIO_CODECS[".mp4"] | {"pcm_s16le", "pcm_s24le"}
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi", ".webm": "webm"}


class _VideoSink:
    """A video file encoded with PyAV into a temporary file that is renamed when complete.

    Beside it goes a record (`video_record_path`) of what was written, so that --overwrite replaces
    only a video rifelab wrote, never a user's file of the same name.
    """

    def __init__(self, path: Path, fps: float, config: InterpolateConfig):
        self.path = path
        self.fps = fps
        self.config = config
        self._container: Any = None
        self._stream: Any = None
        self._file: Any = None
        self._tmp: Path | None = None
        self.removed_temps: list[str] = []
        self.rotation = 0  # display rotation tag (degrees counter-clockwise) of the input video, kept
        self.audio_from: Path | None = None  # a video whose first audio stream is copied into the output
        self._audio: Any = None  # (input container, its audio stream, the output's audio stream)
        self.frame_time: Any = None  # output index -> seconds, for a variable-frame-rate output (else constant)
        self.depth = 8  # bits per sample to keep: above 8, 10-bit HEVC or (.mkv) 16-bit FFV1
        self.lock = OutputLock(path.parent / f".{path.name}.lock", f"output video {path}")

    def check(self) -> None:
        """Every refusal of `prepare`, touching nothing."""
        if self.config.resume:
            raise DataError(
                "--resume works for frame-folder outputs only; write frames to a folder (and encode them with "
                "`rifelab interpolate FOLDER out.mp4 --multi 2`), or rerun with --overwrite"
            )
        refuse_link(self.path)
        refuse_link(video_record_path(self.path))
        if self.path.exists():
            if self.path.is_dir():
                raise DataError(f"output {self.path} is a folder, but its name ends like a video file; rename it")
            if not self.config.overwrite:
                raise DataError(f"output video {self.path} exists; pass --overwrite to replace it")
            if not written_by_rifelab(self.path):
                raise DataError(
                    f"output video {self.path} exists and was not written by rifelab (no matching record "
                    f"{video_record_path(self.path).name} beside it), so --overwrite does not replace it; move it "
                    "away or choose another name"
                )
        if self.path.parent.is_dir():
            self.lock.probe()

    def prepare(self) -> None:
        self.check()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self.check()
            self.removed_temps = _remove_stale_temps(self.path.parent, _temp_pattern(re.escape(self.path.name)))
        except BaseException:
            self.lock.release()
            raise

    def has(self, index: int) -> bool:
        return False

    def _open(self, frame: np.ndarray) -> None:

        h, w = frame.shape[:2]

        self._tmp = temp_path_beside(self.path)  # created with O_EXCL; written through this handle, not its name
        rate = Fraction(self.fps).limit_denominator(100000)
        self._file = open(self._tmp, "r+b")
        self._container = av.open(self._file, "w", format=_FORMATS.get(self.path.suffix.lower(), "mp4"))
        self._container.metadata["comment"] = "written by rifelab interpolate"
        codec, pix_fmt, opts = self._codec(w, h)
        try:
            stream = self._container.add_stream(codec, rate=rate)
        except (av.error.FFmpegError, ValueError) as exc:
            raise DataError(f"this PyAV/FFmpeg build cannot encode {codec} ({exc}); try an .mp4 or .mkv output") from exc
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = opts
        if self.frame_time is not None:
            stream.codec_context.time_base = _VFR_TIME_BASE
        if self.rotation:
            stream.set_display_rotation(self.rotation)
        if self.audio_from is not None:
            self._add_audio()
        self._stream = stream

    def _add_audio(self) -> None:
        """An output audio stream copied from `audio_from`'s first one, or a warning why not."""
        inp = av.open(str(self.audio_from))
        ain = inp.streams.audio[0]
        codec = ain.codec_context.name
        allowed = _AUDIO_CODECS.get(self.path.suffix.lower())
        if allowed is not None and codec not in allowed:
            inp.close()
            log.warning("%s: its %s audio is not copied: a %s file cannot hold it (an .mkv output can)",
                        self.audio_from, codec, self.path.suffix)
            return
        self._audio = (inp, ain, self._container.add_stream_from_template(ain))

    def _copy_audio(self) -> None:
        """Mux the input's audio packets, shifted so that they start with the first video frame."""
        inp, ain, aout = self._audio
        video = inp.streams.video[0]
        start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
        shift = int(round(start / ain.time_base)) if ain.time_base else 0
        for packet in inp.demux(ain):
            if packet.dts is None or packet.pts is None or packet.pts - shift < 0:
                continue
            packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
            packet.stream = aout
            self._container.mux(packet)

    def _close_audio(self) -> None:
        if self._audio is not None:
            with contextlib.suppress(Exception):
                self._audio[0].close()
            self._audio = None

    def _codec(self, w: int, h: int) -> tuple[str, str, dict[str, str]]:
        """(encoder, pixel format, options) for the output's suffix, --lossless and depth."""
        suffix = self.path.suffix.lower()
        even = w % 2 == 0 and h % 2 == 0
        if self.depth > 8:
            if suffix == ".mkv" and (self.config.lossless or self.depth > 10):
                return "ffv1", "gbrp16le", {"level": "3"}
            if self.config.lossless:
                raise DataError(f"--lossless keeps a {self.depth}-bit input only in .mkv (FFV1); name the output .mkv")
            if self.depth > 10:
                log.warning("%s: %d-bit input written as 10-bit HEVC; an .mkv output keeps %d bits (FFV1)",
                            self.path, self.depth, self.depth)
            return ("libx265", "yuv420p10le" if even else "yuv444p10le",
                    {"crf": str(self.config.crf), "preset": "medium", "x265-params": "log-level=error"})
        if self.config.lossless:
            return "libx264rgb", "rgb24", {"crf": "0", "preset": "veryfast"}
        if suffix == ".webm":
            return "libvpx-vp9", "yuv420p" if even else "yuv444p", {"crf": str(self.config.crf), "b": "0"}
        return "libx264", "yuv420p" if even else "yuv444p", {"crf": str(self.config.crf), "preset": "medium"}

    def write(self, index: int, frame: np.ndarray) -> None:

        if self._container is None:
            self._open(frame)
        fmt = "rgb48le" if frame.dtype == np.uint16 else "rgb24"
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=fmt)
        if self.frame_time is not None:
            vf.pts, vf.time_base = int(round(self.frame_time(index) / _VFR_TIME_BASE)), _VFR_TIME_BASE
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def finish(self, summary: InterpolationSummary) -> None:
        if self._container is None:
            self.lock.release()
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            if self._audio is not None:
                self._copy_audio()
                self._close_audio()
            self._container.close()
            self._container = None
            self._file.close()
            self._file = None
            # the record first: killed before the rename, it names a file that is not there, which refuses safely
            record = {"name": self.path.name, "size": self._tmp.stat().st_size, "sha256": _sha256_file(self._tmp),
                      "written_by": "rifelab interpolate", "frames": summary.output_frames}
            atomic_write_text(video_record_path(self.path), json.dumps(record, indent=2) + "\n")
            refuse_link(self.path)
            os.replace(self._tmp, self.path)
        finally:
            self.lock.release()

    def abort(self) -> None:
        self._close_audio()
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
        self.lock.release()


def open_sink(out: Path, config: InterpolateConfig, fps: float | None = None,
              manifest: dict[str, Any] | None = None) -> _FolderSink | _VideoSink:
    """Where a run writes: a video file at `fps` frames per second when `out` names one (by its suffix), else
    a folder of numbered frames recorded in `manifest` (the run's settings). Nothing is written yet."""
    if is_video_path(out):
        if fps is None:
            raise ValueError(f"a video output ({out}) needs its frame rate")
        return _VideoSink(out, fps, config)
    return _FolderSink(out, config, manifest or {})

"""Path maps, allowed roots and the frame fallback of a network-fed callback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_callback_documents import (
    Docs,
    callback,
    feed,
    frames_for,
    stop_doc,
    stream,
    stream_run,
    write_h5,
)

from xsvs_bluesky.callback import FrameAccess, parse_path_map
from xsvs_bluesky.errors import XSVSError


def test_the_longest_prefix_of_the_path_map_wins():
    access = FrameAccess.build(path_map=["/bl=/mnt/a", "/bl/data=/mnt/b"])
    assert access.map(Path("/bl/data/x/1.h5")) == Path("/mnt/b/x/1.h5")
    assert access.map(Path("/bl/other.h5")) == Path("/mnt/a/other.h5")
    assert access.map(Path("/blx/1.h5")) == Path("/blx/1.h5")  # not a prefix
    # with a map and no roots given, the targets are the allowed roots
    assert access.allowed_roots == (Path("/mnt/b").resolve(), Path("/mnt/a").resolve())


@pytest.mark.parametrize("bad", ["no-equals", "relative=/x", "/x="])
def test_a_bad_path_map_names_the_item(bad):
    with pytest.raises(XSVSError, match="SOURCE=TARGET"):
        parse_path_map([bad])


def test_files_outside_the_roots_are_refused_even_through_a_symlink(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret"
    root.mkdir(), outside.mkdir()
    (root / "link").symlink_to(outside)
    access = FrameAccess.build(allowed_roots=[root])
    assert access.check(root / "a.h5") == ""
    assert "outside the allowed roots" in access.check(root / "link" / "a.h5")
    assert str(root.resolve()) in access.check(outside / "a.h5")


def test_a_refused_file_fails_the_derived_run_naming_path_and_reason(tmp_path):
    write_h5(tmp_path / "det.h5", frames_for(0.3, n=20))
    out: Docs = []
    access = FrameAccess.build(allowed_roots=[tmp_path / "elsewhere"])
    feed(callback(out, frame_access=access), stream_run(tmp_path / "det.h5", [10, 10]))
    stop = stop_doc(out)
    assert stop["exit_status"] == "fail"
    assert str(tmp_path / "det.h5") in stop["reason"]
    assert "outside the allowed roots" in stop["reason"]
    assert "20 frames could not be read" in stop["reason"]


def test_a_mapped_path_reads_the_same_frames(tmp_path):
    frames = frames_for(0.3, n=40)
    (tmp_path / "mnt").mkdir()
    write_h5(tmp_path / "mnt" / "det.h5", frames)
    direct: Docs = []
    feed(callback(direct), stream_run(tmp_path / "mnt" / "det.h5", [20, 20]))
    mapped: Docs = []
    access = FrameAccess.build(path_map=[f"/beamline/data={tmp_path / 'mnt'}"])
    docs = stream_run(Path("/beamline/data/det.h5"), [20, 20])
    feed(callback(mapped, frame_access=access), docs)
    (a,), (b,) = stream(direct, "results"), stream(mapped, "results")
    np.testing.assert_array_equal(a["counts"], b["counts"])
    assert stop_doc(mapped)["exit_status"] == "success"


def test_missing_files_are_read_through_the_fallback(tmp_path):
    frames = frames_for(0.3, n=40)
    write_h5(tmp_path / "det.h5", frames)
    direct: Docs = []
    feed(callback(direct), stream_run(tmp_path / "det.h5", [20, 20]))
    asked = []

    def fallback(uid, stream_name, key, start, stop):
        asked.append((stream_name, start, stop))
        return frames[start:stop]

    out: Docs = []
    access = FrameAccess.build(
        path_map=[f"{tmp_path}={tmp_path / 'gone'}"], fallback=fallback
    )
    feed(
        callback(out, frame_access=access, read_timeout_s=0.05),
        stream_run(tmp_path / "det.h5", [20, 20]),
    )
    (a,), (b,) = stream(direct, "results"), stream(out, "results")
    np.testing.assert_array_equal(a["counts"], b["counts"])
    assert stop_doc(out)["exit_status"] == "success"
    assert asked == [("primary", 0, 20), ("primary", 20, 40)]


def test_a_failing_fallback_is_named_with_the_file(tmp_path):
    def fallback(uid, stream_name, key, start, stop):
        raise KeyError(f"no run {uid}")

    out: Docs = []
    access = FrameAccess.build(
        allowed_roots=[tmp_path], fallback=fallback, fallback_timeout_s=0.1
    )
    feed(
        callback(out, frame_access=access, read_timeout_s=0.05),
        stream_run(tmp_path / "absent.h5", [10]),
    )
    reason = stop_doc(out)["reason"]
    assert f"{tmp_path / 'absent.h5'} not found on this host" in reason
    assert "through Tiled" in reason and "KeyError" in reason


def test_abort_open_ends_the_derived_run_with_the_frames_so_far(tmp_path):
    write_h5(tmp_path / "det.h5", frames_for(0.3, n=40))
    out: Docs = []
    cb = callback(out)
    docs = stream_run(tmp_path / "det.h5", [20, 20])
    feed(cb, docs[:-2])  # the last datum and the stop never arrive
    assert cb.open_runs == [docs[0][1]["uid"]]
    assert cb.abort_open("listener stopped") == [docs[0][1]["uid"]]
    stop = stop_doc(out)
    assert stop["exit_status"] == "abort" and stop["reason"] == "listener stopped"
    assert stream(out, "results")[0]["n_frames"] == 20
    assert cb.open_runs == []
    feed(cb, docs[-2:])  # late documents change nothing
    assert [n for n, _ in out].count("stop") == 1


def test_held_frames_are_used_where_they_cover_a_datum_else_the_file(tmp_path):
    """The producer's own buffer stands in for reading back what it wrote.

    The file holds one set of frames and the producer "holds" another for
    the first datum only: the results of the first datum come from the held
    frames (analysed as if read), those of the second from the file.
    """
    in_file, held_frames = frames_for(0.3, n=40), frames_for(1.5, n=20)
    write_h5(tmp_path / "det.h5", in_file)
    docs = stream_run(tmp_path / "det.h5", [20, 20])
    resource_uid = next(d for n, d in docs if n == "stream_resource")["uid"]
    asked: list[tuple[str, int, int]] = []

    def held(uid: str, start: int, stop: int):
        asked.append((uid, start, stop))
        return held_frames[start:stop] if (start, stop) == (0, 20) else None

    out: Docs = []
    feed(callback(out, frame_access=FrameAccess(held=held)), docs)
    assert asked == [(resource_uid, 0, 20), (resource_uid, 20, 40)]
    expected_frames = np.concatenate([held_frames, in_file[20:]])
    write_h5(tmp_path / "expected.h5", expected_frames)
    expected: Docs = []
    feed(callback(expected), stream_run(tmp_path / "expected.h5", [20, 20]))
    (a,), (b,) = stream(out, "results"), stream(expected, "results")
    np.testing.assert_array_equal(a["counts"], b["counts"])
    # and not what the file alone gives
    from_file: Docs = []
    feed(callback(from_file), stream_run(tmp_path / "det.h5", [20, 20]))
    (c,) = stream(from_file, "results")
    assert not np.array_equal(a["counts"], c["counts"])

"""80-plans: XSVS series plans and helpers for the session.

RE(xsvs())                                   8 exposures from 5e-5 s
RE(xsvs([1e-3, 2e-3, 4e-3], frames=2000, sample_name="latex 100 nm"))
RE(xsvs_quick())                             3 short exposures, 200 frames
wait_for_analysis()                          the derived run is complete
xsvs_last()                                  derived run of the last scan
xsvs_table_of(run)                           its beta table (pandas)
"""

from xsvs_bluesky.demo import DEMO_EXPOSURE_TIMES, demo_partitions, series_plan

#: q partitions (1/Angstrom) the analysis uses unless a plan says otherwise
xsvs_partitions = demo_partitions(maxipix_model)


def xsvs(
    exposure_times=DEMO_EXPOSURE_TIMES,
    frames=1000,
    *,
    sample_name="sample",
    partitions=None,
    md=None,
):
    """Fly an XSVS series with ``maxipix``: one stream per exposure time (s).

    The start document records the geometry and the q ``partitions``
    (default ``xsvs_partitions``), so the live analysis and any later
    re-analysis know how to histogram the frames.
    """
    return (
        yield from series_plan(
            maxipix,
            frames=frames,
            exposure_times=exposure_times,
            partitions=partitions or xsvs_partitions,
            sample_name=sample_name,
            md=md,
        )
    )


def xsvs_quick(frames=200, *, sample_name="quick look"):
    """A quick XSVS look: three exposures, few frames."""
    return (
        yield from xsvs(DEMO_EXPOSURE_TIMES[2:7:2], frames, sample_name=sample_name)
    )


def wait_for_analysis(timeout=None):
    """Block until the runs so far are stored (or backed up) and analysed.

    The raw runs' writer works in its own thread: wait for it first.
    Without analysis in this process (XSVS_LOCAL_ANALYSIS=0) this only
    publishes what is buffered; the listener's derived runs appear later.
    """
    if not raw_writer.wait(timeout):
        return False
    if xsvs_session is None:
        return xsvs_publisher is None or xsvs_publisher.close(timeout or 10.0)
    return xsvs_session.wait(timeout)


def xsvs_last():
    """The derived run of the last raw run (waits for the analysis)."""
    from tiled.queries import Key

    wait_for_analysis()
    uid = raw[-1].metadata["start"]["uid"]
    found = processed.search(Key("original_run_uid") == uid)
    return found.values().last() if len(found) else None


def xsvs_table_of(run):
    """beta per exposure and q of a derived run, as a pandas DataFrame."""
    from xsvs_bluesky.results import load_results

    keys = ["exposure", "exposure_time", "q", "kbar", "beta", "beta_err", "n_frames"]
    return load_results(run).table.loc[:, keys].reset_index(drop=True)


print("xsvs profile: plans xsvs(), xsvs_quick(); helpers xsvs_last(), xsvs_table_of()")

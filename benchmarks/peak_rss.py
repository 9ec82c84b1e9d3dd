"""Peak resident memory of a benchmark's child process, measured in the child.

``ru_maxrss`` cannot be used there: on Linux a child keeps its parent's high-water mark across fork and exec, so
a script started from the benchmark process (which holds gigabytes of earlier cases' arrays) reports the parent's
peak and every difference reads 0.  ``VmHWM`` in ``/proc/self/status`` belongs to the child's own address space,
and writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS, so

    base = rss_mark()      # after inputs are built and kernels are warm
    ...                    # the measured work
    extra_mb = (rss_peak() - base) / 1024

is the work's peak extra memory.  ``PRELUDE`` is prepended to the scripts the benchmarks run with ``python -c``.
"""
PRELUDE = r'''
def _status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mark():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status_kb("VmRSS")


def rss_peak():
    return _status_kb("VmHWM")
'''

"""pydl's benchmark suite, shipped with the package: `python -m pydl.bench --help`.

One module per family (`bench_<family>.py`, the same stem as in csrc/ and tests/), shared timing
helpers in `common.py`, the report and comparison in `report.py`, the command line in `__main__.py`.
"""

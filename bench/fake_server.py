"""Wrapper: this benchmark lives in `recursa.evals.perf.fake_server`, so that `recursa bench` runs
it from an installed package. `python bench/fake_server.py [--json PATH]` still works."""

import runpy

if __name__ == "__main__":
    runpy.run_module("recursa.evals.perf.fake_server", run_name="__main__", alter_sys=True)

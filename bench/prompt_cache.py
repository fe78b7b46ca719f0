"""Wrapper: this benchmark lives in `recursa.evals.perf.prompt_cache`, so that it runs from an
installed package. `python bench/prompt_cache.py [--json PATH]` still works."""

import runpy

if __name__ == "__main__":
    runpy.run_module("recursa.evals.perf.prompt_cache", run_name="__main__", alter_sys=True)

"""The names `recursa eval` offers (task families, strategies), apart from the modules that
implement them, so that the command's options and help load no generator or harness."""

FAMILIES = ("niah", "oolong", "pairs", "vartrack", "logs", "codeqa")
"""The generated task families (`generators.generate`), run by default."""
DOCUMENT_FAMILIES = ("pdfpage",)
"""Generated families over documents, run only when named: they need the `docs` extra."""
STRATEGIES = ("direct", "rlm", "rlm-d2", "rlm-nosub")
"""The strategies a job runs (`harness`)."""

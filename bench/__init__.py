"""greenagents benchmarks: ``python -m bench [--quick | --smoke]``; see ``bench/__main__.py``.

This package imports nothing at import time on purpose: a benchmark child process
(``python -m bench.child``) must be able to monkey-patch the standard library before ``ssl``,
``socket`` users or any HTTP client is imported.
"""

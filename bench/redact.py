"""Showing URIs without their secrets: ``scheme://user:password@host`` becomes ``scheme://user:***@host``.

Used wherever a tracking or database URI reaches a person or a record: every ``BenchError`` message (so every
``error:`` line), logs, Hydra's saved configs (``bench.sweeps``). Credentials themselves belong in the environment
(``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, ``PGPASSFILE``), never in a URI on a command line.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(://[^:/@\s'\"]*:)[^@\s'\"]*@")


def hide_password(text: str) -> str:
    """``text`` with the password of every ``://user:password@`` in it replaced by ``***``.

    >>> hide_password("postgresql://brain:secret@127.0.0.1:5433/mlflow")
    'postgresql://brain:***@127.0.0.1:5433/mlflow'
    """
    return _USERINFO.sub(r"\1***@", text)


def without_userinfo(uri: str) -> str:
    """``uri`` without its ``user[:password]@`` part (for a request that sends credentials another way).

    >>> without_userinfo("https://admin:s3cret@lab-host:5001")
    'https://lab-host:5001'
    """
    return re.sub(r"(://)[^/@\s]*@", r"\1", uri, count=1)

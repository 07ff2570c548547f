"""The one refusal error: a run, an input or a config that Stampede will not act on.

Every refusal reads as one line, ``<field>: <problem>; fix: <what to do>``, so
that the CLI, the Airflow task log and Slack can show it as it is, before any
load is sent. The domain errors (a bad scenario, a target that may not receive
load, a busy target, a budget that does not fit) are kinds of :class:`Refusal`;
the surfaces catch :class:`Refusal` alone.
"""

from __future__ import annotations


class Refusal(ValueError):
    """``field: problem; fix: …``: nothing was started, nothing was sent.

    Build one from its parts (``Refusal("users", "20001 exceeds the cap", "lower users")``)
    or, for errors that compose their own line, from a finished line (``Refusal.line(text)``).
    """

    def __init__(self, field: str, problem: str = "", fix: str = "") -> None:
        if problem or fix:
            text = f"{field}: {problem}; fix: {fix}"
        else:
            text = field
        super().__init__(" ".join(text.split()))  # one line, whatever the parts held

    @classmethod
    def line(cls, text: str) -> "Refusal":
        """A refusal whose text is already ``field: problem; fix: …``."""
        return cls(text)

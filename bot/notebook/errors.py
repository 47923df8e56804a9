"""What the notebook API raises when the bot's pipeline does not do what was asked.

A notebook call runs the same command as chat, so it gets the same answer; the answer's text is the
exception's message, word for word, and `reply` keeps the whole answer (fields, status). The classes
follow the answer's status so a notebook can catch what it cares about:

    RayopsError                 the input was wrong or the backend refused (ReplyStatus.ERROR)
     +-- Refused                not allowed for this person (ReplyStatus.REFUSED)
     +-- ClusterGone            the cluster does not exist (any more)
     +-- ApprovalPending        over a limit: waiting for an approver (ReplyStatus.PENDING)
"""

from __future__ import annotations

from bot.adapters.base import Reply, ReplyStatus


class RayopsError(Exception):
    """The answer was not OK; `str(e)` is the same text chat would show."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply

    @property
    def message(self) -> str:
        return self.reply.text


class Refused(RayopsError):
    """The access policy does not allow this person to do this; nothing was changed."""


class ClusterGone(RayopsError):
    """The cluster was deleted (or never existed in that namespace)."""


class ApprovalPending(RayopsError):
    """Over the person's limits: the request waits for an approver as `request_id`.

    Approvers see it with `pending` in chat (or the console of `rayops up`) and approve it there;
    `RayopsSession.wait_for_approval(e.request_id)` waits for their decision.
    """

    def __init__(self, reply: Reply, request_id: str | None) -> None:
        super().__init__(reply)
        self.request_id = request_id


class SetupError(RuntimeError):
    """A session cannot be built (no policies, no namespace, unknown user): what is missing and how
    to give it. Raised by `RayopsSession.local()` / `.kubernetes()`, before anything was changed."""


def raise_for(reply: Reply, request_id: str | None = None) -> Reply:
    """Return an OK reply; raise the matching error for any other."""
    if reply.status is ReplyStatus.OK:
        return reply
    if reply.status is ReplyStatus.REFUSED:
        raise Refused(reply)
    if reply.status is ReplyStatus.PENDING:
        raise ApprovalPending(reply, request_id)
    raise RayopsError(reply)

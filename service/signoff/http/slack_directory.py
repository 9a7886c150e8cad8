"""Who clicked in Slack as a signoff Identity: the confirmed email, roles from user groups."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from signoff.approvals.model import Identity
from signoff.errors import PermissionDenied, StoreUnavailable, Unauthenticated
from signoff.safetext import plain_line

log = logging.getLogger("signoff.http.slack")
ISSUER = "slack"


@dataclass(frozen=True)
class RoleSource:
    """Slack user groups (ids such as S0123ABC) mapped to signoff roles and groups. Membership
    is read from Slack (usergroups.users.list) on each resolution: the message never says."""

    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def usergroups(self) -> list[str]:
        return sorted({*self.roles, *self.groups})


class SlackDirectory:
    """Resolves a Slack user id (taken from a verified interaction payload) to an Identity."""

    def __init__(self, client: WebClient, source: RoleSource, *, team_id: str = "") -> None:
        self._client = client
        self._source = source
        self._team_id = team_id

    def identity(self, user_id: str) -> Identity:
        """The signoff identity of `user_id`: a human whose workspace email Slack has
        confirmed, with the roles and groups of the mapped user groups it belongs to.
        Raises Unauthenticated for anyone else, StoreUnavailable when Slack cannot be asked."""
        try:
            user = self._client.users_info(user=user_id).get("user") or {}
        except SlackApiError as exc:
            # user_not_found, or a user of another workspace: nobody signoff knows.
            log.info("slack users.info refused %s (%s)", plain_line(user_id)[:40], _error(exc))
            raise Unauthenticated("this Slack user is not known to signoff") from None
        except SlackClientError as exc:
            raise StoreUnavailable(f"Slack could not be asked ({type(exc).__name__})") from None
        except OSError as exc:
            raise StoreUnavailable(f"Slack could not be asked ({type(exc).__name__})") from None
        if not isinstance(user, dict) or user.get("id") != user_id:
            raise Unauthenticated("this Slack user is not known to signoff")
        if self._team_id and user.get("team_id") != self._team_id:
            raise Unauthenticated("this Slack user belongs to another workspace")
        if user.get("deleted") or user.get("is_bot") or user.get("is_app_user"):
            # Bots and apps are never humans, whatever their profile says.
            raise PermissionDenied("not_human", "only humans can approve")
        profile = user.get("profile") or {}
        email = profile.get("email") if isinstance(profile, dict) else None
        if not isinstance(email, str) or not email or user.get("is_email_confirmed") is not True:
            raise Unauthenticated("this Slack user has no confirmed workspace email")
        roles: set[str] = set()
        groups: set[str] = set()
        for usergroup in self._source.usergroups:
            if user_id in self._members(usergroup):
                roles |= self._source.roles.get(usergroup, frozenset())
                groups |= self._source.groups.get(usergroup, frozenset())
        return Identity(email, "human", frozenset(roles), frozenset(groups), issuer=ISSUER)

    def _members(self, usergroup: str) -> frozenset[str]:
        try:
            users = self._client.usergroups_users_list(usergroup=usergroup).get("users") or []
        except (SlackClientError, OSError) as exc:
            # Fails closed: a membership Slack cannot confirm grants nothing.
            log.warning("slack usergroups.users.list failed for %s (%s)", usergroup, _error(exc))
            return frozenset()
        return frozenset(u for u in users if isinstance(u, str))


def _error(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        code = exc.response.get("error") if exc.response is not None else None
        return plain_line(str(code or "error"))[:60]
    return type(exc).__name__

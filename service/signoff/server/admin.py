"""PolicyAdminService: reload the policy bundle and report its status, for administrators only."""

from __future__ import annotations

import grpc

from signoff.errors import PermissionDenied
from signoff.identity import CallerAuthenticator
from signoff.server.reload import LoadStatus, PolicyReloader
from signoff.server.status import guarded
from signoff.v1 import admin_pb2 as adb
from signoff.v1 import admin_pb2_grpc as adb_grpc

ADMIN_ROLE = "signoff_admin"


class PolicyAdminService(adb_grpc.PolicyAdminServiceServicer):
    """Every call needs a verified credential with the `signoff_admin` role."""

    def __init__(self, reloader: PolicyReloader, authenticator: CallerAuthenticator) -> None:
        self._reloader = reloader
        self._auth = authenticator

    def _admit(self, context: grpc.ServicerContext) -> None:
        who = self._auth.from_metadata(context.invocation_metadata())
        if ADMIN_ROLE not in who.roles:
            raise PermissionDenied("not_admin", f"needs the {ADMIN_ROLE} role")

    def ReloadPolicies(
        self, request: adb.ReloadPoliciesRequest, context: grpc.ServicerContext
    ) -> adb.ReloadPoliciesResponse:
        def run() -> adb.ReloadPoliciesResponse:
            self._admit(context)
            status, changed = self._reloader.reload()
            return adb.ReloadPoliciesResponse(status=status_proto(status), changed=changed)

        return guarded(context, run)

    def GetPolicyStatus(
        self, request: adb.GetPolicyStatusRequest, context: grpc.ServicerContext
    ) -> adb.GetPolicyStatusResponse:
        def run() -> adb.GetPolicyStatusResponse:
            self._admit(context)
            return adb.GetPolicyStatusResponse(status=status_proto(self._reloader.status))

        return guarded(context, run)


def status_proto(status: LoadStatus) -> adb.PolicyStatus:
    out = adb.PolicyStatus(
        revision=status.revision,
        rule_count=status.rule_count,
        last_load_failed=status.failed,
        problems=[
            adb.PolicyProblem(
                file=p.file,
                line=max(0, p.line),
                column=max(0, p.column),
                rule_id=p.rule_id,
                message=p.message,
            )
            for p in status.problems
        ],
    )
    out.loaded_at.FromDatetime(status.loaded_at)
    out.last_attempt_at.FromDatetime(status.attempted_at)
    return out
